//! Deliberate misbehaviour for the integration tests: a proposer that also
//! sends bad proposals, so the tests can check that every follower rejects
//! them. Read from `MONTANA_TEST_FAULTS` (never set in production), e.g.
//! `forge@3,corrupt@5`: at window 3 first send a proposal that names the
//! proposer as its maker but is signed by another key; at window 5 first send a proposal with one
//! corrupted checkpoint, correctly signed (only the VDF check can catch it).
//!
//! Compiled only with the `test-faults` cargo feature (and in unit tests):
//! the production binary contains no fault injector.

use crate::consensus::propose::{Propose, ProposeKey};
use crate::keys::NodeKeys;
use crate::proposal::{Basis, Proposal};

/// The environment variable holding the fault list.
pub const ENV_FAULTS: &str = "MONTANA_TEST_FAULTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Forge(u64),
    CorruptCheckpoint(u64),
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
                _ => Err(format!("unknown fault kind '{kind}' (forge, corrupt)")),
            }
        })
        .collect()
}

pub fn from_env() -> Result<Vec<Fault>, String> {
    parse(&std::env::var(ENV_FAULTS).unwrap_or_default())
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
        assert!(parse("melt@3").is_err());
        assert!(parse("forge").is_err());
        assert!(parse("forge@x").is_err());
    }
}
