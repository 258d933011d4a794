//! Deliberate misbehaviour for the integration tests: a proposer that also
//! sends bad proposals, so the tests can check that every follower rejects
//! them. Read from `MONTANA_TEST_FAULTS` (never set in production), e.g.
//! `forge@3,corrupt@5`: at window 3 first send a proposal that names the
//! proposer as its maker but is signed by another key; at window 5 first send a proposal with one
//! corrupted checkpoint, correctly signed (only the VDF check can catch it).
//! `slow-verify@N`: from the node's Nth verification on, its verify backend
//! is slowed (each call lasts at least [`SLOW_CALL`] and five times what it
//! took), as a throttled CPU or a noisy neighbour would; the drift monitor
//! must notice (a re-ranking drops the slowed wrapper, as replacing a slow
//! backend would).
//!
//! Compiled only with the `test-faults` cargo feature (and in unit tests):
//! the production binary contains no fault injector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use montana_vdf::{
    AdapterInfo, Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl,
    Hash32, HashSuite, Operation, Segment, VerifyOptions, VerifyOutcome,
};

use crate::backend_choice::Chosen;
use crate::consensus::propose::{Propose, ProposeKey};
use crate::keys::NodeKeys;
use crate::proposal::{Basis, Proposal};

/// The environment variable holding the fault list.
pub const ENV_FAULTS: &str = "MONTANA_TEST_FAULTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Forge(u64),
    CorruptCheckpoint(u64),
    /// From this verification (counted from 1) on, verification is slow.
    SlowVerify(u64),
}

/// Parses `kind@window,...`; unknown entries are an error (a typo must not
/// silently test nothing).
pub fn parse(s: &str) -> Result<Vec<Fault>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (kind, w) = e
                .split_once('@')
                .ok_or_else(|| format!("fault '{e}' is not kind@window"))?;
            let w: u64 = w.parse().map_err(|_| format!("fault '{e}': bad window"))?;
            match kind {
                "forge" => Ok(Fault::Forge(w)),
                "corrupt" => Ok(Fault::CorruptCheckpoint(w)),
                "slow-verify" => Ok(Fault::SlowVerify(w)),
                _ => Err(format!(
                    "unknown fault kind '{kind}' (forge, corrupt, slow-verify)"
                )),
            }
        })
        .collect()
}

pub fn from_env() -> Result<Vec<Fault>, String> {
    parse(&std::env::var(ENV_FAULTS).unwrap_or_default())
}

/// A slowed verification call lasts at least this long (long enough for
/// the drift watch to count it).
pub const SLOW_CALL: Duration = Duration::from_millis(100);

/// `chosen` with its verify backend slowed per a `slow-verify` fault.
pub fn slow_backends(faults: &[Fault], mut chosen: Chosen) -> Chosen {
    if let Some(from) = faults.iter().find_map(|f| match f {
        Fault::SlowVerify(n) => Some(*n),
        _ => None,
    }) {
        tracing::warn!(from, "test fault: verification slowed from call {from} on");
        chosen.verify = Arc::new(Slow {
            inner: chosen.verify.clone(),
            from,
            calls: AtomicU64::new(0),
        });
    }
    chosen
}

/// A backend whose verification slows down from its `from`th call.
struct Slow {
    inner: Arc<dyn Backend>,
    from: u64,
    calls: AtomicU64,
}

impl Backend for Slow {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    fn availability(&self) -> Availability {
        self.inner.availability()
    }
    fn lanes(&self) -> usize {
        self.inner.lanes()
    }
    fn supports(&self, suite: HashSuite, op: Operation) -> bool {
        self.inner.supports(suite, op)
    }
    fn auto_rank(&self, suite: HashSuite, op: Operation) -> Option<u32> {
        self.inner.auto_rank(suite, op)
    }
    fn adapter(&self) -> Option<AdapterInfo> {
        self.inner.adapter()
    }
    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        self.inner.evaluate(suite, start, params, ctl)
    }
    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let t0 = Instant::now();
        let r = self.inner.verify(suite, segments, opts);
        if n >= self.from {
            let took = t0.elapsed();
            tracing::debug!(n, "test fault: slowed verification");
            std::thread::sleep(SLOW_CALL.saturating_sub(took).max(took * 4));
        }
        r
    }
}

/// The bad Proposes to send before the real `m` (round 0 only): a forged
/// one (its proposal names the maker but a stranger signed it: rejected
/// `bad_signature` before it can take the round) and a corrupted one (correctly signed,
/// one checkpoint wrong: it takes round 0, fails verification everywhere,
/// and the next round's proposer carries the window).
pub fn bad_twins(faults: &[Fault], keys: &NodeKeys, m: &Propose) -> Vec<Propose> {
    let p = &m.proposal;
    let h = &p.header;
    if m.key.round != 0 || m.key.valid_round.is_some() {
        return Vec::new();
    }
    let basis = Basis {
        window: h.window,
        link: h.link,
        bundle: h.bundle,
        state_root: h.state_root,
    };
    faults
        .iter()
        .filter_map(|f| {
            let bad = match *f {
                Fault::Forge(w) if w == h.window => {
                    // Names the real maker, signed by a stranger.
                    let stranger = NodeKeys::generate().ok()?;
                    let mut forged =
                        Proposal::sign(&stranger, h.suite, h.d, basis, p.checkpoints.clone());
                    forged.header.proposer = h.proposer;
                    forged
                }
                Fault::CorruptCheckpoint(w) if w == h.window => {
                    let mut cps = p.checkpoints.clone();
                    let i = cps.len() / 2;
                    cps[i].0[0] ^= 0x80;
                    if i + 1 == cps.len() {
                        return None; // K = 1: T itself, caught by decoding
                    }
                    Proposal::sign(keys, h.suite, h.d, basis, cps)
                }
                _ => return None,
            };
            let key = ProposeKey {
                value: montana_vdf::Hash32(bad.hash()),
                ..m.key
            };
            Some(Propose::sign(key, bad, keys))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fault_lists() {
        assert_eq!(
            parse("forge@3, corrupt@5").unwrap(),
            vec![Fault::Forge(3), Fault::CorruptCheckpoint(5)]
        );
        assert!(parse("").unwrap().is_empty());
        assert_eq!(parse("slow-verify@2").unwrap(), vec![Fault::SlowVerify(2)]);
        assert!(parse("melt@3").is_err());
        assert!(parse("forge").is_err());
        assert!(parse("forge@x").is_err());
    }
}
