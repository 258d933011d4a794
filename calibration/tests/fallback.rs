//! The fallback wrapper (`montana_backends::fallback`; these tests share
//! the calibration tests' fakes): a backend that fails at run time is replaced by the
//! next best, once, logged once, and the results stay the oracle's.

mod common;

use std::sync::Arc;

use common::{Fake, LogCapture, Mode};
use montana_backends::conformance::oracle_proof;
use montana_backends::FallbackBackend;
use montana_backends::{Registry, ScalarBackend};
use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, HashSuite, Operation, Proof, VerifyOptions,
    VerifyOutcome,
};

fn start(suite: HashSuite) -> montana_vdf::Hash32 {
    suite.hash(b"fallback test")
}

#[test]
fn a_lost_device_falls_back_once_and_logs_once() {
    let gpu = Arc::new(Fake::gpu("gpu", Mode::DeviceLost, "DiscreteGpu"));
    let registry = Registry::new(vec![gpu.clone(), Arc::new(ScalarBackend)]);
    for suite in HashSuite::ALL {
        let gpu_calls_before = gpu.calls();
        let fb = FallbackBackend::from_registry(gpu.clone(), &registry, suite, Operation::Verify);
        assert_eq!(fb.chain_names(), ["gpu", "scalar"]);
        assert_eq!(fb.name(), "gpu");

        let params = ChainParams::new(120, 6).unwrap();
        let proof = oracle_proof(suite, &start(suite), params);
        let mut bad = proof.clone();
        bad.checkpoints_mut()[4].0[0] ^= 1;

        let logs = LogCapture::default();
        let (ok, err, eval) = logs.capture(|| {
            let opts = VerifyOptions::threads(2);
            let ok = fb.verify_proofs(std::slice::from_ref(&proof), &opts);
            let err = fb.verify_proofs(&[proof.clone(), bad.clone()], &opts);
            let eval = fb.evaluate(suite, &start(suite), params, &EvalControl::none());
            (ok, err, eval)
        });
        assert_eq!(ok, Ok(VerifyOutcome::Valid));
        assert_eq!(
            err,
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: 6 + 4
            })
        );
        assert_eq!(eval.unwrap(), proof.checkpoints());
        // The broken backend was tried exactly once, then left for good.
        assert_eq!(gpu.calls() - gpu_calls_before, 1);
        assert_eq!(fb.name(), "scalar");
        assert_eq!(fb.fallbacks(), 1);
        let text = logs.text();
        assert_eq!(
            text.matches("falling back").count(),
            1,
            "logged once: {text}"
        );
        assert!(text.contains("WARN") && text.contains("gpu") && text.contains("device lost"));
    }
}

#[test]
fn the_last_backend_s_error_is_returned_and_other_errors_pass_through() {
    let a = Arc::new(Fake::new("a", Mode::DeviceLost));
    let b = Arc::new(Fake::new("b", Mode::DeviceLost));
    let fb = FallbackBackend::new(a.clone(), vec![b.clone(), a.clone()]);
    assert_eq!(fb.chain_names(), ["a", "b"]);
    let params = ChainParams::new(10, 1).unwrap();
    let r = fb.evaluate(
        HashSuite::Sha256,
        &start(HashSuite::Sha256),
        params,
        &EvalControl::none(),
    );
    assert!(matches!(r, Err(BackendError::Device { ref backend, .. }) if backend == "b"));
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // Cancellation is not a backend failure: no fallback.
    let c = Arc::new(Fake::new("c", Mode::Correct));
    let fb = FallbackBackend::new(c.clone(), vec![Arc::new(ScalarBackend)]);
    let stop = std::sync::atomic::AtomicBool::new(true);
    let ctl = EvalControl {
        cancel: Some(&stop),
        progress: None,
    };
    let r = fb.evaluate(HashSuite::Sha256, &start(HashSuite::Sha256), params, &ctl);
    assert_eq!(r, Err(BackendError::Cancelled));
    assert_eq!((fb.name(), fb.fallbacks()), ("c", 0));
}

/// A proof of `k` segments of `l` steps and a copy with checkpoint `bad`
/// corrupted.
fn proofs(suite: HashSuite, k: u64, l: u64, bad: usize) -> (Proof, Proof) {
    let proof = oracle_proof(suite, &start(suite), ChainParams::new(k * l, k).unwrap());
    let mut corrupted = proof.clone();
    corrupted.checkpoints_mut()[bad].0[7] ^= 0x40;
    (proof, corrupted)
}

#[test]
fn a_backend_that_rejects_a_valid_segment_is_refused_and_the_batch_verified_again() {
    // Issue 15: like the GPU on lavapipe, fine on short segments (so it
    // passes the known-bad sample), wrong from 1,000 steps on.
    for suite in HashSuite::ALL {
        let faulty = Arc::new(Fake::gpu("gpu", Mode::RejectFrom(1_000), "Cpu").verify_only());
        let fb = FallbackBackend::new(faulty.clone(), vec![Arc::new(ScalarBackend)]);
        let opts = VerifyOptions::threads(2);

        // Short segments: the backend is right, and stays in use; a real
        // rejection stands after the oracle agrees.
        let (short, short_bad) = proofs(suite, 8, 50, 5);
        assert_eq!(
            fb.verify_proofs(std::slice::from_ref(&short), &opts),
            Ok(VerifyOutcome::Valid)
        );
        assert_eq!(
            fb.verify_proofs(&[short, short_bad], &opts),
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: 8 + 5
            })
        );
        assert_eq!((fb.name(), fb.faults().get()), ("gpu", 0));

        // Long segments: the "invalid" is checked, found wrong, and the
        // batch verified again by the scalar backend, for good.
        let (long, long_bad) = proofs(suite, 3, 1_500, 2);
        let logs = LogCapture::default();
        let got = logs.capture(|| fb.verify_proofs(std::slice::from_ref(&long), &opts));
        assert_eq!(got, Ok(VerifyOutcome::Valid));
        assert_eq!(
            (fb.name(), fb.faults().get(), fb.fallbacks()),
            ("scalar", 1, 1)
        );
        let text = logs.text();
        assert_eq!(text.matches("falling back").count(), 1, "{text}");
        assert!(
            text.contains(
                "rejected a valid segment at index 0 (1500 steps; the scalar oracle accepts it)"
            ),
            "{text}"
        );
        let calls = faulty.calls();
        assert_eq!(
            fb.verify_proofs(&[long_bad], &opts),
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: 2
            })
        );
        assert_eq!(
            faulty.calls(),
            calls,
            "a refused backend is never asked again"
        );
    }
}

#[test]
fn a_backend_that_accepts_a_corrupted_sample_is_refused_at_first_use() {
    // Issue 12, defect 7.
    for suite in HashSuite::ALL {
        let lenient = Arc::new(Fake::gpu("gpu", Mode::InstantValid, "DiscreteGpu").verify_only());
        let fb = FallbackBackend::new(lenient.clone(), vec![Arc::new(ScalarBackend)]);
        let (_, bad) = proofs(suite, 6, 20, 4);
        let logs = LogCapture::default();
        let got = logs
            .capture(|| fb.verify_proofs(std::slice::from_ref(&bad), &VerifyOptions::threads(1)));
        // Without the check this would be Valid: the backend accepts anything.
        assert_eq!(
            got,
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: 4
            })
        );
        assert_eq!(lenient.calls(), 1, "only the known-bad sample");
        assert_eq!((fb.name(), fb.faults().get()), ("scalar", 1));
        let text = logs.text();
        assert!(
            text.contains("accepted a corrupted sample (segment 9 of 12 is wrong)"),
            "{text}"
        );
    }

    // A backend that reports the wrong index is refused too; one that is
    // never used is never asked (a GPU never chosen is never opened).
    let first = Arc::new(Fake::new("first", Mode::RejectFirst).verify_only());
    let unused = Arc::new(Fake::gpu("gpu", Mode::Correct, "DiscreteGpu").verify_only());
    let fb = FallbackBackend::new(first.clone(), vec![Arc::new(ScalarBackend), unused.clone()]);
    let (good, _) = proofs(HashSuite::Sha256, 4, 10, 0);
    assert_eq!(
        fb.verify_proofs(&[good], &VerifyOptions::threads(1)),
        Ok(VerifyOutcome::Valid)
    );
    assert_eq!((first.calls(), unused.calls()), (1, 0));
    assert_eq!(fb.name(), "scalar");
}

#[test]
fn every_backend_reached_by_a_fallback_is_checked_at_its_first_use() {
    let lost = Arc::new(Fake::gpu("gpu", Mode::DeviceLost, "DiscreteGpu").verify_only());
    let lenient = Arc::new(Fake::new("lenient", Mode::InstantValid).verify_only());
    let correct = Arc::new(Fake::new("correct", Mode::Correct).verify_only());
    let faults = montana_backends::fallback::FaultCounter::default();
    let fb = FallbackBackend::new(lost.clone(), vec![lenient.clone(), correct.clone()])
        .with_faults(faults.clone());
    for suite in HashSuite::ALL {
        let (good, bad) = proofs(suite, 5, 30, 1);
        let opts = VerifyOptions::threads(1);
        assert_eq!(fb.verify_proofs(&[good], &opts), Ok(VerifyOutcome::Valid));
        assert_eq!(
            fb.verify_proofs(&[bad], &opts),
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: 1
            })
        );
    }
    assert_eq!(fb.name(), "correct");
    assert_eq!(faults.get(), 2);
    assert_eq!((lost.calls(), lenient.calls()), (1, 1));
    // The known-bad sample runs once per suite, then every call is the
    // caller's: 2 samples + 4 batches.
    assert_eq!(correct.calls(), 2 + 4);
}

#[test]
fn the_known_bad_sample_is_wrong_at_exactly_one_segment() {
    use montana_backends::fallback::known_bad_sample;
    for suite in HashSuite::ALL {
        let (segments, bad) = known_bad_sample(suite);
        assert!(segments.len() > 8 && bad >= 8 && bad < segments.len());
        for (i, s) in segments.iter().enumerate() {
            assert_eq!(s.check_reference(suite), i != bad, "{suite} segment {i}");
        }
        assert_eq!(
            ScalarBackend.verify(suite, &segments, &VerifyOptions::threads(1)),
            Ok(VerifyOutcome::Invalid {
                first_bad_segment: bad
            })
        );
    }
}

#[test]
fn a_backend_failure_reads_as_one_line_of_text() {
    // Issue 15: `montana calibrate` printed the outcome's Rust debug form.
    let wrong = Fake::new("wrong", Mode::RejectFirst);
    let e = montana_calibration::measure::measure_verify(
        &wrong,
        HashSuite::Sha256,
        100,
        10,
        1,
        &common::tiny(),
        &montana_calibration::NoProgress,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "backend 'wrong' failed: rejected a valid measurement batch at segment 0"
    );
    assert_eq!(
        VerifyOutcome::Invalid {
            first_bad_segment: 3
        }
        .to_string(),
        "invalid at segment 3"
    );
    assert_eq!(VerifyOutcome::Valid.to_string(), "valid");
}
