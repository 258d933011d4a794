//! The fallback wrapper: a backend that fails at run time is replaced by the
//! next best, once, logged once, and the results stay the oracle's.

mod common;

use std::sync::Arc;

use common::{Fake, LogCapture, Mode};
use montana_backends::conformance::oracle_proof;
use montana_backends::{Registry, ScalarBackend};
use montana_calibration::FallbackBackend;
use montana_vdf::{
    Backend, BackendError, ChainParams, EvalControl, HashSuite, Operation, VerifyOptions,
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
