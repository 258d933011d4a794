//! The GPU backend against the scalar oracle, run for real on whatever
//! adapter this host has (in CI: Mesa's lavapipe, a software Vulkan device).
//! Each test skips, saying why, only where there is no adapter at all.
//!
//! Small configurations (a few lanes per chunk, a few steps per dispatch)
//! push small batches through every path: chunking, carrying a segment's
//! state across dispatches, and chunks finishing in a pipeline.

use std::sync::Arc;
use std::time::Duration;

use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, Hash32, HashSuite, Operation, Proof, Segment,
    VerifyOptions, VerifyOutcome,
};
use rand::{Rng, SeedableRng};

use super::*;
use crate::conformance::{self, oracle_proof, Shape};
use crate::registry::{compiled, Registry};

/// The default backend, or `None` (with the reason printed) without an adapter.
fn backend(config: GpuConfig) -> Option<GpuBackend> {
    if adapter::chosen().is_none() {
        eprintln!(
            "skipping: no GPU adapter on this host (install mesa-vulkan-drivers for lavapipe)"
        );
        return None;
    }
    Some(GpuBackend::new(config))
}

/// Chunks of `lanes` segments, at most `steps` steps per dispatch.
fn tiny(lanes: usize, steps: u32) -> GpuConfig {
    GpuConfig {
        target_dispatch: Duration::from_millis(50),
        initial_steps: steps,
        max_steps_per_dispatch: steps,
        max_lanes: lanes,
    }
}

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn opts() -> VerifyOptions {
    VerifyOptions::threads(1)
}

/// Verifies `proofs` and each single-checkpoint corruption, expecting the
/// corrupted index.
fn check(gpu: &GpuBackend, proofs: &[Proof], seed: u64) {
    conformance::check_verify(gpu, proofs, &opts(), &mut rng(seed))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn random_oracle_proofs_verify_and_corruptions_are_found() {
    let configs = [GpuConfig::default(), tiny(37, 11), tiny(1, 1000)];
    for (c, config) in configs.into_iter().enumerate() {
        let Some(gpu) = backend(config) else { return };
        let mut rng = rng(c as u64);
        for _ in 0..3 {
            conformance::random_round(&gpu, &mut rng, Shape::default(), &opts())
                .unwrap_or_else(|e| panic!("config {c}: {e}"));
        }
    }
}

#[test]
fn batch_sizes_from_one_to_thousands() {
    let Some(gpu) = backend(GpuConfig::default()) else {
        return;
    };
    let chunked = backend(tiny(1000, 64)).unwrap();
    for (i, k) in [1u64, 2, 63, 64, 65, 999, 4_099, 12_345]
        .into_iter()
        .enumerate()
    {
        for suite in HashSuite::ALL {
            // Lengths that are multiples of nothing in particular.
            let l = [1u64, 3, 7, 13][i % 4];
            let proof = oracle_proof(
                suite,
                &Hash32([i as u8; 32]),
                ChainParams::new(k * l, k).unwrap(),
            );
            check(&gpu, std::slice::from_ref(&proof), i as u64);
            if k > 1000 {
                check(&chunked, std::slice::from_ref(&proof), i as u64);
            }
        }
    }
}

#[test]
fn the_lowest_corrupted_index_wins_across_chunks() {
    // 5 chunks of 1,000 lanes; two dispatches per segment.
    let Some(gpu) = backend(tiny(1000, 10)) else {
        return;
    };
    for suite in HashSuite::ALL {
        let proof = oracle_proof(
            suite,
            &Hash32([9; 32]),
            ChainParams::new(4_500 * 17, 4_500).unwrap(),
        );
        for bad in [
            vec![0],
            vec![999, 1000],
            vec![4_499],
            vec![2_500, 1_200, 3_999],
            vec![1_000, 4_000],
        ] {
            let mut p = proof.clone();
            for &i in &bad {
                p.checkpoints_mut()[i].0[31] ^= 0x80;
            }
            let lowest = *bad.iter().min().unwrap();
            assert_eq!(
                gpu.verify_proofs(&[p], &opts()).unwrap(),
                VerifyOutcome::Invalid {
                    first_bad_segment: lowest
                },
                "{suite}: corrupted {bad:?}"
            );
        }
    }
}

#[test]
fn long_segments_are_split_by_steps() {
    // A tiny step budget forces dozens of dispatches per segment, carrying
    // each lane's value and steps left between them.
    let Some(gpu) = backend(tiny(64, 37)) else {
        return;
    };
    let adaptive = backend(GpuConfig::default()).unwrap();
    for suite in HashSuite::ALL {
        let proofs = [
            oracle_proof(
                suite,
                &Hash32([1; 32]),
                ChainParams::new(3 * 2_011, 3).unwrap(),
            ),
            oracle_proof(
                suite,
                &Hash32([2; 32]),
                ChainParams::new(70 * 389, 70).unwrap(),
            ),
            oracle_proof(suite, &Hash32([3; 32]), ChainParams::new(5_003, 1).unwrap()),
        ];
        check(&gpu, &proofs, 7);
        // The default backend starts at 64 steps a dispatch and grows.
        check(&adaptive, &proofs, 8);
    }
}

#[test]
fn zero_step_claims_hold_only_when_start_equals_end() {
    let Some(gpu) = backend(tiny(2, 5)) else {
        return;
    };
    let a = Hash32([5; 32]);
    let b = Hash32([6; 32]);
    let seg = |start, end, steps| Segment { start, end, steps };
    for suite in HashSuite::ALL {
        let ok = [seg(a, a, 0), seg(a, suite.step(&a), 1), seg(b, b, 0)];
        assert_eq!(
            gpu.verify(suite, &ok, &opts()).unwrap(),
            VerifyOutcome::Valid
        );
        let bad = [seg(a, a, 0), seg(a, suite.step(&a), 1), seg(a, b, 0)];
        assert_eq!(
            gpu.verify(suite, &bad, &opts()).unwrap(),
            VerifyOutcome::Invalid {
                first_bad_segment: 2
            }
        );
        assert_eq!(
            gpu.verify(suite, &[], &opts()).unwrap(),
            VerifyOutcome::Valid
        );
    }
}

#[test]
fn verify_only_and_never_auto_on_a_software_adapter() {
    let Some(gpu) = backend(GpuConfig::default()) else {
        return;
    };
    assert!(gpu.availability().is_available());
    let info = gpu.adapter().expect("an adapter");
    assert_eq!(info.api, "Vulkan");
    assert!(
        !info.name.is_empty() && !info.device_type.is_empty(),
        "{info:?}"
    );
    assert_eq!(adapters()[0], info);

    for suite in HashSuite::ALL {
        assert!(gpu.supports(suite, Operation::Verify));
        assert!(!gpu.supports(suite, Operation::Eval));
        assert!(matches!(
            gpu.evaluate(
                suite,
                &Hash32::ZERO,
                ChainParams::new(1, 1).unwrap(),
                &EvalControl::none()
            ),
            Err(BackendError::Unsupported { .. })
        ));
    }

    let registry = Registry::new(compiled());
    assert!(registry.names().contains(&"gpu"));
    // Asking by name always works.
    assert_eq!(
        registry
            .get("gpu", HashSuite::Blake3, Operation::Verify)
            .unwrap()
            .name(),
        "gpu"
    );
    if info.device_type == "Cpu" {
        // The only test touching the policy.
        let allow = |allow_cpu| {
            adapter::set_policy(crate::GpuPolicy {
                allow_cpu,
                ..Default::default()
            })
        };
        allow(false);
        assert_eq!(gpu.auto_rank(HashSuite::Sha256, Operation::Verify), None);
        assert_ne!(
            registry
                .auto(HashSuite::Sha256, Operation::Verify)
                .unwrap()
                .name(),
            "gpu"
        );
        allow(true);
        assert_eq!(
            gpu.auto_rank(HashSuite::Sha256, Operation::Verify),
            Some(AUTO_RANK)
        );
        allow(false);
    } else {
        assert_eq!(
            gpu.auto_rank(HashSuite::Sha256, Operation::Verify),
            Some(AUTO_RANK)
        );
    }
    assert_eq!(gpu.auto_rank(HashSuite::Sha256, Operation::Eval), None);
}

#[test]
fn buffers_are_reused_across_calls_of_changing_sizes() {
    // One backend, batches growing and shrinking, suites alternating: the
    // kept buffers must never leak one call's lanes into the next.
    let Some(gpu) = backend(tiny(300, 50)) else {
        return;
    };
    let mut rng = rng(11);
    for n in [5usize, 700, 3, 301, 1, 650] {
        let suite = HashSuite::ALL[n % 2];
        let segs: Vec<Segment> = (0..n)
            .map(|_| {
                let start = Hash32(rng.random());
                let steps = rng.random_range(1..120);
                Segment {
                    start,
                    end: suite.iterate(&start, steps),
                    steps,
                }
            })
            .collect();
        assert_eq!(
            gpu.verify(suite, &segs, &opts()).unwrap(),
            VerifyOutcome::Valid,
            "n={n}"
        );
        let mut bad = segs.clone();
        let i = rng.random_range(0..n);
        bad[i].steps += 1;
        assert_eq!(
            gpu.verify(suite, &bad, &opts()).unwrap(),
            VerifyOutcome::Invalid {
                first_bad_segment: i
            },
            "n={n}"
        );
    }
}

#[test]
fn concurrent_callers_share_the_device() {
    let Some(gpu) = backend(tiny(128, 20)) else {
        return;
    };
    let gpu = Arc::new(gpu);
    let handles: Vec<_> = (0..3u8)
        .map(|t| {
            let gpu = gpu.clone();
            std::thread::spawn(move || {
                let suite = HashSuite::ALL[usize::from(t % 2)];
                let proof = oracle_proof(
                    suite,
                    &Hash32([t; 32]),
                    ChainParams::new(300 * 9, 300).unwrap(),
                );
                let mut bad = proof.clone();
                bad.checkpoints_mut()[200 + usize::from(t)].0[0] ^= 1;
                assert!(gpu.verify_proofs(&[proof], &opts()).unwrap().is_valid());
                assert_eq!(
                    gpu.verify_proofs(&[bad], &opts()).unwrap(),
                    VerifyOutcome::Invalid {
                        first_bad_segment: 200 + usize::from(t)
                    }
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn bench_measures_a_valid_synthetic_batch() {
    let Some(gpu) = backend(GpuConfig::default()) else {
        return;
    };
    for suite in HashSuite::ALL {
        let t = bench::verify_throughput(&gpu, suite, 300, 200, 3).unwrap();
        assert_eq!((t.segments, t.steps, t.runs), (300, 200, 3));
        assert!(t.seconds > 0.0 && t.hashes_per_second > 0.0, "{t:?}");
        assert_eq!(t.adapter, gpu.adapter());

        // The synthetic claims are true, and a changed one is caught.
        let mut segs = bench::synthetic_segments(&gpu, suite, 50, 30, 1).unwrap();
        assert!(segs.iter().all(|s| s.check_reference(suite)));
        segs[17].end.0[3] ^= 4;
        assert_eq!(
            gpu.verify(suite, &segs, &opts()).unwrap(),
            VerifyOutcome::Invalid {
                first_bad_segment: 17
            }
        );

        let rows = bench::crossover(
            &gpu,
            &crate::ScalarBackend,
            suite,
            &[(2, 10), (64, 100)],
            &opts(),
            1,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.gpu_seconds > 0.0 && r.cpu_seconds > 0.0));
    }
}

/// Set in the child process of `a_lost_device_is_a_typed_error_and_callers_fall_back`.
const LOST_CHILD: &str = "MONTANA_GPU_TEST_LOSE_DEVICE";

#[test]
fn a_lost_device_is_a_typed_error_and_callers_fall_back() {
    // Losing the device is for the life of the process, so it happens in a
    // child process running `lose_the_device_then_fall_back`.
    if backend(GpuConfig::default()).is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "gpu::tests::lose_the_device_then_fall_back",
            "--exact",
            "--nocapture",
        ])
        .env(LOST_CHILD, "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
}

#[test]
fn lose_the_device_then_fall_back() {
    if std::env::var_os(LOST_CHILD).is_none() {
        return; // Runs only as the child of the test above.
    }
    let gpu = GpuBackend::default();
    let segs = [Segment {
        start: Hash32::ZERO,
        end: HashSuite::Blake3.step(&Hash32::ZERO),
        steps: 1,
    }];
    assert!(gpu
        .verify(HashSuite::Blake3, &segs, &opts())
        .unwrap()
        .is_valid());
    context::context().unwrap().device.destroy();

    let err = gpu.verify(HashSuite::Blake3, &segs, &opts()).unwrap_err();
    assert!(matches!(err, BackendError::Device { .. }), "{err:?}");
    assert!(!err.to_string().contains('\n'), "{err}");
    let why = gpu.availability();
    assert!(!why.is_available(), "{err} / {why:?}");

    // With MONTANA_GPU_ALLOW_CPU the GPU would lead `auto`; lost, it is skipped.
    adapter::set_policy(crate::GpuPolicy {
        allow_cpu: true,
        ..Default::default()
    });
    let registry = Registry::new(compiled());
    let fallback = registry.ranked(HashSuite::Blake3, Operation::Verify);
    assert!(fallback.iter().all(|b| b.name() != "gpu"));
    // A caller that had picked the GPU before it failed moves on to the
    // next in that ranking (crate::FallbackBackend, tested
    // there): the first one verifies.
    assert_eq!(
        fallback[0].verify(HashSuite::Blake3, &segs, &opts()),
        Ok(VerifyOutcome::Valid)
    );
    println!("lost device: {err}; availability: {why:?}");
}

/// Issue 15: a fresh backend walked 64, 64, 64, 256, ... 16,384 steps per
/// dispatch (65,472 in all), then 65,536, one past llvmpipe's loop limit: a
/// segment of 131,008 steps or more read as invalid. Now no dispatch asks
/// for more than [`MAX_STEPS_PER_DISPATCH`] steps.
#[test]
fn segments_of_131_008_steps_and_more_verify() {
    if backend(GpuConfig::default()).is_none() {
        return;
    }
    for suite in HashSuite::ALL {
        for steps in [131_007u64, 131_008, 262_144] {
            // Fresh backends: the learnt budget is what the bug needed.
            let fresh = backend(GpuConfig::default()).unwrap();
            let proof = oracle_proof(suite, &Hash32([4; 32]), ChainParams::new(steps, 1).unwrap());
            check(&fresh, std::slice::from_ref(&proof), steps);
        }
        // The same without timing: a config asking for one dispatch of
        // 131,008 steps (or 65,536) gets the capped budget instead.
        for (cap, steps) in [
            (131_072u32, 131_008u64),
            (65_536, 65_536),
            (u32::MAX, 200_000),
        ] {
            let gpu = backend(tiny(1, cap)).unwrap();
            let proof = oracle_proof(suite, &Hash32([5; 32]), ChainParams::new(steps, 1).unwrap());
            check(&gpu, std::slice::from_ref(&proof), steps);
        }
    }
}

#[test]
fn no_config_asks_for_more_steps_per_dispatch_than_the_cap() {
    // No device needed: the cap is applied when the backend is made.
    assert_eq!(
        GpuConfig::default().max_steps_per_dispatch,
        MAX_STEPS_PER_DISPATCH
    );
    for asked in [65_536, 131_072, u32::MAX] {
        let gpu = GpuBackend::new(tiny(1, asked));
        assert_eq!(gpu.config.max_steps_per_dispatch, MAX_STEPS_PER_DISPATCH);
        let state = gpu.state.lock().unwrap();
        assert!(state
            .tuners
            .iter()
            .all(|t| t.budget(1) <= MAX_STEPS_PER_DISPATCH));
        // However fast the device looks, the learnt budget stays capped.
        let mut t = state.tuners[0].clone();
        t.record(1, 60_000, Duration::from_micros(1));
        assert_eq!(t.budget(1), MAX_STEPS_PER_DISPATCH);
    }
    let small = GpuBackend::new(tiny(1, 1_000));
    assert_eq!(small.config.max_steps_per_dispatch, 1_000);
}

/// Set in the child process of `a_loop_cut_short_is_a_device_error_not_a_verdict`.
const CUT_CHILD: &str = "MONTANA_GPU_TEST_CUT_LOOP";

#[test]
fn a_loop_cut_short_is_a_device_error_not_a_verdict() {
    // A device error marks the device failed for the life of the process:
    // the uncapped dispatch runs in a child process.
    if backend(GpuConfig::default()).is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "gpu::tests::run_past_the_loop_limit",
            "--exact",
            "--nocapture",
        ])
        .env(CUT_CHILD, "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "{log}");
}

#[test]
fn run_past_the_loop_limit() {
    if std::env::var_os(CUT_CHILD).is_none() {
        return; // Runs only as the child of the test above.
    }
    // One dispatch of 65,536 steps: llvmpipe ends the loop one step short.
    let gpu = GpuBackend::unclamped(tiny(1, 65_536));
    for suite in HashSuite::ALL {
        let proof = oracle_proof(
            suite,
            &Hash32([6; 32]),
            ChainParams::new(65_536, 1).unwrap(),
        );
        match gpu.verify_proofs(std::slice::from_ref(&proof), &opts()) {
            // A driver without the limit walks it all.
            Ok(VerifyOutcome::Valid) => println!("{suite}: no loop limit on this driver"),
            Err(BackendError::Device { message, .. }) => {
                assert!(
                    message.contains("ended the step loop of segment 0 early"),
                    "{message}"
                );
                println!("{suite}: {message}");
                return;
            }
            other => panic!("{suite}: a loop cut short must not be a verdict: {other:?}"),
        }
    }
}

/// Segment lengths across every boundary the GPU has: around each power of
/// two up to 2^20 steps and each dispatch split, in batches mixing 1-step
/// and million-step segments, with the default (learnt) budget, a fixed
/// small budget, and chunks smaller than the batch.
#[test]
fn segment_lengths_across_every_boundary() {
    let Some(gpu) = backend(GpuConfig::default()) else {
        return;
    };
    let mut rng = rng(15);
    let splits = conformance::splits(&gpu);
    assert!(splits.contains(&131_008), "{splits:?}");
    conformance::check_boundaries(&gpu, 20, &splits, &opts(), &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    // A fixed budget of 1,000 steps: splits at every multiple of it; 16
    // lanes per chunk: the batch spans several chunks.
    let fixed = backend(tiny(16, 1_000)).unwrap();
    conformance::check_boundaries(&fixed, 14, &[1_000, 2_000, 3_000], &opts(), &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// One segment of 2^22 steps in each suite, valid then corrupted (on
/// lavapipe with 2 cores: about 2 s for BLAKE3 and 4 s for SHA-256,
/// oracle included).
#[test]
fn a_segment_of_four_million_steps() {
    let Some(gpu) = backend(GpuConfig::default()) else {
        return;
    };
    for suite in HashSuite::ALL {
        let t = std::time::Instant::now();
        conformance::check_lengths(&gpu, suite, &[1 << 22], 0, &opts(), &mut rng(22))
            .unwrap_or_else(|e| panic!("{e}"));
        println!("{suite}: 2^22 steps checked twice in {:?}", t.elapsed());
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn suite() -> impl Strategy<Value = HashSuite> {
        prop_oneof![Just(HashSuite::Sha256), Just(HashSuite::Blake3)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any proof the oracle makes verifies on the GPU under any chunking
        /// and step budget, and a flipped byte is found at its segment.
        #[test]
        fn oracle_proofs_under_any_chunking(
            suite in suite(),
            seed in any::<[u8; 32]>(),
            k in 1u64..300,
            len in 1u64..80,
            lanes in 1usize..200,
            steps in 1u32..50,
            corrupt in any::<(prop::sample::Index, usize, u8)>(),
        ) {
            let Some(gpu) = backend(tiny(lanes, steps)) else { return Ok(()) };
            let proof = oracle_proof(suite, &Hash32(seed), ChainParams::new(k * len, k).unwrap());
            prop_assert_eq!(gpu.verify_proofs(std::slice::from_ref(&proof), &opts()).unwrap(), VerifyOutcome::Valid);
            let (idx, byte, mask) = corrupt;
            let i = idx.index(k as usize);
            let mut bad = proof;
            bad.checkpoints_mut()[i].0[byte % 32] ^= mask.max(1);
            prop_assert_eq!(
                gpu.verify_proofs(&[bad], &opts()).unwrap(),
                VerifyOutcome::Invalid { first_bad_segment: i }
            );
        }
    }
}
