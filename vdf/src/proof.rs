//! Checkpointed proofs of one chain run.
//!
//! For a start value s, N steps and K checkpoints with L = N / K:
//! `checkpoints[i] = H^((i+1)*L)(s)` for i = 0..K-1; the last checkpoint is the
//! output. Segment i runs from `checkpoints[i-1]` (s for i = 0) to
//! `checkpoints[i]`, so a corrupted `checkpoints[i]` makes segment i fail
//! (and, since it is also segment i+1's start, usually i+1 too): the lowest
//! failing index is the one reported.

use crate::error::ParamError;
use crate::hash::Hash32;
use crate::params::ChainParams;
use crate::segment::Segment;
use crate::suite::HashSuite;

/// A chain run with its evenly spaced checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    suite: HashSuite,
    start: Hash32,
    params: ChainParams,
    checkpoints: Vec<Hash32>,
}

impl Proof {
    /// Assembles a proof, checking that the checkpoint list matches K.
    pub fn new(
        suite: HashSuite,
        start: Hash32,
        params: ChainParams,
        checkpoints: Vec<Hash32>,
    ) -> Result<Self, ParamError> {
        if checkpoints.len() as u64 != params.checkpoints() as u64 {
            return Err(ParamError::CheckpointCount {
                declared: params.checkpoints() as u64,
                found: checkpoints.len(),
            });
        }
        Ok(Proof {
            suite,
            start,
            params,
            checkpoints,
        })
    }

    pub fn suite(&self) -> HashSuite {
        self.suite
    }

    /// The chain's start value (the seed).
    pub fn start(&self) -> &Hash32 {
        &self.start
    }

    pub fn params(&self) -> ChainParams {
        self.params
    }

    /// N.
    pub fn iterations(&self) -> u64 {
        self.params.iterations()
    }

    pub fn checkpoints(&self) -> &[Hash32] {
        &self.checkpoints
    }

    /// Mutable access for tests that corrupt a checkpoint on purpose.
    pub fn checkpoints_mut(&mut self) -> &mut [Hash32] {
        &mut self.checkpoints
    }

    /// `H^N(start)`, the last checkpoint.
    pub fn output(&self) -> &Hash32 {
        self.checkpoints.last().expect("K >= 1 by construction")
    }

    /// Appends this proof's K segments to `out`, in index order.
    pub fn push_segments(&self, out: &mut Vec<Segment>) {
        let steps = self.params.segment_len();
        let mut prev = self.start;
        out.reserve(self.checkpoints.len());
        for cp in &self.checkpoints {
            out.push(Segment {
                start: prev,
                end: *cp,
                steps,
            });
            prev = *cp;
        }
    }

    /// This proof's K segments.
    pub fn segments(&self) -> Vec<Segment> {
        let mut v = Vec::new();
        self.push_segments(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_proof(suite: HashSuite, start: Hash32, n: u64, k: u64) -> Proof {
        let params = ChainParams::new(n, k).unwrap();
        let mut v = start;
        let cps = (0..k)
            .map(|_| {
                v = suite.iterate(&v, params.segment_len());
                v
            })
            .collect();
        Proof::new(suite, start, params, cps).unwrap()
    }

    #[test]
    fn segments_chain_start_to_output() {
        let p = reference_proof(HashSuite::Sha256, Hash32([1; 32]), 12, 4);
        let segs = p.segments();
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].start, *p.start());
        assert_eq!(segs[3].end, *p.output());
        for w in segs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(segs
            .iter()
            .all(|s| s.steps == 3 && s.check_reference(p.suite())));
        assert_eq!(*p.output(), HashSuite::Sha256.iterate(p.start(), 12));
    }

    #[test]
    fn checkpoint_count_must_match() {
        let params = ChainParams::new(4, 2).unwrap();
        assert!(matches!(
            Proof::new(HashSuite::Blake3, Hash32::ZERO, params, vec![Hash32::ZERO]),
            Err(ParamError::CheckpointCount {
                declared: 2,
                found: 1
            })
        ));
    }
}
