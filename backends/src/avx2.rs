//! The `avx2` backend: 8-lane verification of both suites.
//!
//! Eight segments per YMM register, word-sliced ([`crate::lanes`]), each lane
//! iterating its whole segment with the state in registers and L1; groups
//! spread over threads by the driver. No evaluation: one chain cannot use
//! lanes, and `sha-ni` / `sse41` serve it.

pub mod kernel;

use montana_vdf::{
    Availability, Backend, BackendError, BackendKind, HashSuite, Operation, Segment, VerifyOptions,
    VerifyOutcome,
};

use crate::lanes::{self, LaneKernel};
use crate::platform::{require, Feature, Platform};

/// AVX2 kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Avx2Backend;

impl Backend for Avx2Backend {
    fn name(&self) -> &'static str {
        "avx2"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Simd
    }

    fn availability(&self) -> Availability {
        Platform::get().availability(Feature::Avx2)
    }

    fn lanes(&self) -> usize {
        8
    }

    fn supports(&self, _suite: HashSuite, op: Operation) -> bool {
        op == Operation::Verify
    }

    fn auto_rank(&self, _suite: HashSuite, _op: Operation) -> Option<u32> {
        // SHA-256: below `sha-ni` (measured); BLAKE3: the widest available here.
        Some(20)
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        require(self, Feature::Avx2, suite, Operation::Verify)?;
        let k: LaneKernel = match suite {
            HashSuite::Sha256 => kernel::sha256_advance_lanes,
            HashSuite::Blake3 => kernel::blake3_advance_lanes,
        };
        // SAFETY: `require` checked AVX2.
        Ok(unsafe { lanes::verify_with(segments, self.lanes(), opts.threads, k) })
    }
}
