//! Test helpers shared by the unit tests: valid proposal chains computed
//! with the reference step (tiny D), and tampered copies.

use crate::genesis::Genesis;
use crate::keys::NodeKeys;
use crate::proposal::Proposal;
use crate::storage::Tip;
use montana_vdf::Hash32;

/// The K checkpoints of one window from `start`, by the reference step.
pub fn checkpoints(g: &Genesis, start: Hash32) -> Vec<Hash32> {
    let l = g.d / g.checkpoints;
    let mut v = start;
    (0..g.checkpoints)
        .map(|_| {
            v = g.hash.iterate(&v, l);
            v
        })
        .collect()
}

/// A valid chain of windows 1..=n signed by `keys` (the proposer's).
pub fn chain(g: &Genesis, keys: &NodeKeys, n: u64) -> Vec<Proposal> {
    let mut tip = Tip::genesis(g);
    (1..=n)
        .map(|w| {
            let cps = checkpoints(g, tip.t);
            let p = Proposal::sign(keys, g.hash, w, tip.hash, g.d, g.proposer(), cps);
            tip = tip.after(&p);
            p
        })
        .collect()
}

/// `p` with checkpoint `i` changed and re-signed by `keys`: a proposal whose
/// header and signature are fine and whose proof is not.
pub fn corrupt_checkpoint(p: &Proposal, keys: &NodeKeys, i: usize) -> Proposal {
    let mut cps = p.checkpoints.clone();
    cps[i].0[0] ^= 0x80;
    let h = &p.header;
    Proposal::sign(keys, h.suite, h.window, h.link, h.d, h.proposer, cps)
}
