//! A segment: the unit of verification.
//!
//! A proof's checkpoints cut its chain into K segments; segment i claims
//! `H^L(start_i) = end_i`. Segments are independent, so a verifier runs as many
//! side by side as it has lanes, cores or GPU invocations, and a batch may mix
//! segments of many proofs (catching up verifies many windows in one call).

use crate::hash::Hash32;
use crate::suite::HashSuite;

/// One claim `H^steps(start) == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: Hash32,
    pub end: Hash32,
    pub steps: u64,
}

impl Segment {
    /// Checks the claim with the reference step (slow; for tests).
    pub fn check_reference(&self, suite: HashSuite) -> bool {
        suite.iterate(&self.start, self.steps) == self.end
    }
}
