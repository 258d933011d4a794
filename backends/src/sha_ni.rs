//! The `sha-ni` backend: SHA-256 on the x86 SHA extensions.
//!
//! - eval: one chain, state in registers, padding precomputed
//!   ([`kernel`]); at least as fast as the `sha2` crate, which also uses
//!   these instructions but builds and finalises a hasher per step.
//! - verify: [`STREAMS`] chains interleaved on one core, so one chain's
//!   `sha256rnds2` latency hides behind the others'; groups spread over
//!   threads by the driver.

pub mod hybrid;
pub mod kernel;

use montana_vdf::{
    Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl, Hash32, HashSuite,
    Operation, Segment, VerifyOptions, VerifyOutcome,
};

use crate::consts::{be_words, from_be_words};
use crate::driver;
use crate::lanes::check_group;
use crate::platform::{require, Feature, Platform};

/// Chains interleaved per core when verifying. Measured on Zen 3 (one core,
/// best of 40): 1 stream 24.7 M hashes/s, 2: 48.9, 3: 54.3, 4: 54.8; the
/// `sha256rnds2` pipe is full from 3 on, and 4 still fits the 16 XMM
/// registers well enough to cost nothing (`cargo bench -p montana-benches --
/// sha-ni-streams` measures it).
pub const STREAMS: usize = 4;

/// SHA-256 through the SHA extensions.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShaNiBackend;

/// `n` steps of each of up to 4 chains, interleaved.
fn advance_streams(vals: &mut [Hash32], n: u64) {
    fn run<const N: usize>(vals: &mut [Hash32], n: u64) {
        let mut w: [[u32; 8]; N] = std::array::from_fn(|i| be_words(&vals[i].0));
        // SAFETY: only reached through `require(.., Feature::ShaNi, ..)`.
        unsafe { kernel::advance::<N>(&mut w, n) };
        for (v, w) in vals.iter_mut().zip(&w) {
            v.0 = from_be_words(w);
        }
    }
    match vals.len() {
        0 => {}
        1 => run::<1>(vals, n),
        2 => run::<2>(vals, n),
        3 => run::<3>(vals, n),
        4 => run::<4>(vals, n),
        k => panic!("sha-ni runs at most 4 streams, got {k}"),
    }
}

impl Backend for ShaNiBackend {
    fn name(&self) -> &'static str {
        "sha-ni"
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Simd
    }

    fn availability(&self) -> Availability {
        Platform::get().availability(Feature::ShaNi)
    }

    fn lanes(&self) -> usize {
        STREAMS
    }

    fn supports(&self, suite: HashSuite, _op: Operation) -> bool {
        suite == HashSuite::Sha256
    }

    fn auto_rank(&self, _suite: HashSuite, op: Operation) -> Option<u32> {
        // Measured on Zen 3: fastest SHA-256 path for both operations.
        Some(match op {
            Operation::Eval => 30,
            Operation::Verify => 30,
        })
    }

    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        require(self, Feature::ShaNi, suite, Operation::Eval)?;
        driver::evaluate_chain(start, params, ctl, |v, n| {
            advance_streams(std::slice::from_mut(v), n)
        })
    }

    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        require(self, Feature::ShaNi, suite, Operation::Verify)?;
        Ok(driver::verify_batch(
            segments,
            STREAMS,
            opts.threads,
            |group| check_group(group, advance_streams),
        ))
    }
}
