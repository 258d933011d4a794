//! The TimeChain: `T0 = H("mt-timechain" || 0x00 || 32 zero bytes)` and
//! `T(w+1) = H^D(T(w))`, D steps per window. Window w's value is T(w).

use crate::backend::{Backend, EvalControl};
use crate::error::BackendError;
use crate::hash::Hash32;
use crate::params::ChainParams;
use crate::suite::HashSuite;

/// The domain-separation tag hashed into the genesis value.
pub const GENESIS_TAG: &[u8] = b"mt-timechain";

/// The bytes hashed for T0: the tag, a zero byte, then 32 zero bytes.
pub fn genesis_input() -> Vec<u8> {
    let mut v = Vec::with_capacity(GENESIS_TAG.len() + 33);
    v.extend_from_slice(GENESIS_TAG);
    v.push(0);
    v.extend_from_slice(&[0u8; 32]);
    v
}

/// A TimeChain: a suite and D, the steps per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeChain {
    pub suite: HashSuite,
    pub d: u64,
}

impl TimeChain {
    pub fn new(suite: HashSuite, d: u64) -> Self {
        TimeChain { suite, d }
    }

    /// T0, window 0's value.
    pub fn t0(&self) -> Hash32 {
        self.suite.hash(&genesis_input())
    }

    /// T(w+1) from T(w): one window's evaluation, D steps, on `backend`.
    pub fn next(
        &self,
        backend: &dyn Backend,
        prev: &Hash32,
        ctl: &EvalControl<'_>,
    ) -> Result<Hash32, BackendError> {
        let params = ChainParams::new(self.d, 1)?;
        let cps = backend.evaluate(self.suite, prev, params, ctl)?;
        Ok(*cps.last().expect("one checkpoint"))
    }

    /// T(windows), evaluated window by window from T0.
    pub fn window(
        &self,
        backend: &dyn Backend,
        windows: u64,
        ctl: &EvalControl<'_>,
    ) -> Result<Hash32, BackendError> {
        let mut t = self.t0();
        for _ in 0..windows {
            t = self.next(backend, &t, ctl)?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_t0_known_answer() {
        assert_eq!(
            TimeChain::new(HashSuite::Sha256, 1).t0().to_hex(),
            "0619a36fd8b606aa6d6a799c1fac31e1187302a23484e7516b12122cbe49ebc3"
        );
    }

    #[test]
    fn genesis_input_layout() {
        let g = genesis_input();
        assert_eq!(g.len(), 12 + 1 + 32);
        assert_eq!(&g[..12], b"mt-timechain");
        assert!(g[12..].iter().all(|&b| b == 0));
    }
}
