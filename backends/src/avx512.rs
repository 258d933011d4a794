//! The `avx512` backend: 16-lane verification of both suites, and BLAKE3
//! evaluation with native rotates.
//!
//! Structurally the `avx2` backend at twice the width (the hash steps are the
//! same generic code in [`crate::lanes`]); its vectors use `vprord` for every
//! rotation and `vpternlogd` for SHA-256's three-input functions. BLAKE3 eval
//! is the `sse41` row-wise step with one-instruction rotates, which shortens
//! the critical path of G (rot12 and rot7 are a shift pair and an OR on
//! SSE4.1).
//!
//! Needs AVX-512F and AVX-512VL. The development machine (Zen 3) has neither,
//! so these kernels are compile-checked there and tested on AVX-512 hardware
//! only (the tests skip, saying so, elsewhere).

pub mod kernel;

use montana_vdf::{
    Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl, Hash32, HashSuite,
    Operation, Segment, VerifyOptions, VerifyOutcome,
};

use crate::consts::{from_le_words, le_words};
use crate::driver;
use crate::lanes::{self, LaneKernel};
use crate::platform::{require, Feature, Platform};

/// AVX-512 kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Avx512Backend;

impl Backend for Avx512Backend {
    fn name(&self) -> &'static str {
        "avx512"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Simd
    }

    fn availability(&self) -> Availability {
        Platform::get().availability(Feature::Avx512)
    }

    fn lanes(&self) -> usize {
        16
    }

    fn supports(&self, suite: HashSuite, op: Operation) -> bool {
        match op {
            Operation::Eval => suite == HashSuite::Blake3,
            Operation::Verify => true,
        }
    }

    fn auto_rank(&self, suite: HashSuite, op: Operation) -> Option<u32> {
        // Measured on an Intel Xeon with SHA-NI and AVX-512 (issue 14): SHA-256
        // verify on one thread 3.84x `crate-sha2` against sha-ni's 1.80x, so
        // it leads sha-ni (30) there; best for BLAKE3 verify. BLAKE3 eval:
        // above sse41 (one-instruction rotates).
        Some(match (suite, op) {
            (HashSuite::Blake3, Operation::Eval) => 25,
            (HashSuite::Sha256, Operation::Verify) => 35,
            _ => 30,
        })
    }

    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        require(self, Feature::Avx512, suite, Operation::Eval)?;
        driver::evaluate_chain(start, params, ctl, |v, n| {
            let mut w = le_words(&v.0);
            // SAFETY: `require` checked AVX-512F/VL.
            unsafe { kernel::blake3_advance(&mut w, n) };
            v.0 = from_le_words(&w);
        })
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        require(self, Feature::Avx512, suite, Operation::Verify)?;
        let k: LaneKernel = match suite {
            HashSuite::Sha256 => kernel::sha256_advance_lanes,
            HashSuite::Blake3 => kernel::blake3_advance_lanes,
        };
        // SAFETY: `require` checked AVX-512F/VL.
        Ok(unsafe { lanes::verify_with(segments, self.lanes(), opts.threads, k) })
    }
}
