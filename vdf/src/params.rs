//! Chain parameters: the iteration count N and checkpoint count K.
//!
//! Bounds: 1 <= N <= 2^40, 1 <= K <= min(N, 2^20), and K divides N so every
//! segment has the same length L = N / K. Checked once here so that nothing
//! downstream can divide by zero or allocate without bound.

use crate::error::ParamError;

/// Largest iteration count a proof may claim: 2^40.
pub const MAX_ITERATIONS: u64 = 1 << 40;
/// Largest checkpoint count a proof may carry: 2^20 (32 MiB of checkpoints).
pub const MAX_CHECKPOINTS: u64 = 1 << 20;

/// Validated (N, K).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainParams {
    iterations: u64,
    checkpoints: u32,
}

impl ChainParams {
    /// Checks the bounds; see the module docs.
    pub fn new(iterations: u64, checkpoints: u64) -> Result<Self, ParamError> {
        if iterations == 0 {
            return Err(ParamError::ZeroIterations);
        }
        if iterations > MAX_ITERATIONS {
            return Err(ParamError::TooManyIterations(iterations));
        }
        if checkpoints == 0 {
            return Err(ParamError::ZeroCheckpoints);
        }
        let max = iterations.min(MAX_CHECKPOINTS);
        if checkpoints > max {
            return Err(ParamError::TooManyCheckpoints { checkpoints, max });
        }
        if !iterations.is_multiple_of(checkpoints) {
            return Err(ParamError::NotDivisible {
                iterations,
                checkpoints,
            });
        }
        Ok(ChainParams {
            iterations,
            checkpoints: checkpoints as u32,
        })
    }

    /// N, the total number of steps.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// K, the number of checkpoints (and of segments).
    pub fn checkpoints(&self) -> u32 {
        self.checkpoints
    }

    /// L = N / K, the steps in each segment.
    pub fn segment_len(&self) -> u64 {
        self.iterations / self.checkpoints as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_bounds() {
        assert!(ChainParams::new(1, 1).is_ok());
        assert!(ChainParams::new(MAX_ITERATIONS, MAX_CHECKPOINTS).is_ok());
        let p = ChainParams::new(325_000_000, 6_500).unwrap();
        assert_eq!(p.segment_len(), 50_000);
    }

    #[test]
    fn rejects_out_of_bounds() {
        assert_eq!(ChainParams::new(0, 1), Err(ParamError::ZeroIterations));
        assert_eq!(
            ChainParams::new(MAX_ITERATIONS + 1, 1),
            Err(ParamError::TooManyIterations(MAX_ITERATIONS + 1))
        );
        assert_eq!(ChainParams::new(10, 0), Err(ParamError::ZeroCheckpoints));
        assert!(matches!(
            ChainParams::new(10, 11),
            Err(ParamError::TooManyCheckpoints { .. })
        ));
        assert!(matches!(
            ChainParams::new(1 << 30, MAX_CHECKPOINTS * 2),
            Err(ParamError::TooManyCheckpoints { .. })
        ));
        assert!(matches!(
            ChainParams::new(10, 3),
            Err(ParamError::NotDivisible { .. })
        ));
        assert!(matches!(
            ChainParams::new(10, u64::MAX),
            Err(ParamError::TooManyCheckpoints { .. })
        ));
    }
}
