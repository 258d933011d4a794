//! The `sse41` backend: BLAKE3 evaluation with one specialised compression per
//! step, and 4-lane verification for CPUs without AVX2.
//!
//! - eval (BLAKE3): the row-wise step of [`crate::blake3_rows`] with SSE4.1
//!   rotations; no hasher set-up or finalisation per step.
//! - verify (both suites): 4 segments per XMM register, word-sliced
//!   ([`crate::lanes`]); `avx2` and `sha-ni` outrank it where present, and
//!   `auto` uses it for BLAKE3 only (see `auto_rank`).

pub mod kernel;

use montana_vdf::{
    Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl, Hash32, HashSuite,
    Operation, Segment, VerifyOptions, VerifyOutcome,
};

use crate::consts::{from_le_words, le_words};
use crate::driver;
use crate::lanes::{self, LaneKernel};
use crate::platform::{require, Feature, Platform};

/// SSE4.1 kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sse41Backend;

impl Backend for Sse41Backend {
    fn name(&self) -> &'static str {
        "sse41"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Simd
    }

    fn availability(&self) -> Availability {
        Platform::get().availability(Feature::Sse41)
    }

    fn lanes(&self) -> usize {
        4
    }

    fn supports(&self, suite: HashSuite, op: Operation) -> bool {
        match op {
            Operation::Eval => suite == HashSuite::Blake3,
            Operation::Verify => true,
        }
    }

    fn auto_rank(&self, suite: HashSuite, op: Operation) -> Option<u32> {
        match (suite, op) {
            (_, Operation::Eval) => Some(20),
            (HashSuite::Blake3, Operation::Verify) => Some(10),
            // 4 lanes of software SHA-256 in 16 non-VEX registers measured
            // about as fast as the `sha2` crate's software path, so `auto`
            // does not bet on it; it stays reachable by name.
            (HashSuite::Sha256, Operation::Verify) => None,
        }
    }

    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        require(self, Feature::Sse41, suite, Operation::Eval)?;
        driver::evaluate_chain(start, params, ctl, |v, n| {
            let mut w = le_words(&v.0);
            // SAFETY: `require` checked SSE4.1.
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
        require(self, Feature::Sse41, suite, Operation::Verify)?;
        let k: LaneKernel = match suite {
            HashSuite::Sha256 => kernel::sha256_advance_lanes,
            HashSuite::Blake3 => kernel::blake3_advance_lanes,
        };
        // SAFETY: `require` checked SSE4.1.
        Ok(unsafe { lanes::verify_with(segments, self.lanes(), opts.threads, k) })
    }
}
