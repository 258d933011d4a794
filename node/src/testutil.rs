//! Test helpers shared by the unit tests: valid cemented chains computed
//! with the reference step (tiny D), and tampered copies.

use crate::chain::Cemented;
use crate::consensus::active::NodeId;
use crate::consensus::agreement::VoteKind;
use crate::consensus::state::State;
use crate::consensus::vote::{Cement, Vote, VoteKey};
use crate::genesis::Genesis;
use crate::keys::NodeKeys;
use crate::proposal::{Basis, Proposal};
use crate::storage::Tip;
use montana_vdf::Hash32;
use std::borrow::Borrow;

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

/// A Cement of `p` (round 0) signed by every key in `keys`.
pub fn cement_of<K: Borrow<NodeKeys>>(g: &Genesis, keys: &[K], p: &Proposal) -> Cement {
    let votes: Vec<Vote> = keys
        .iter()
        .map(|k| {
            let k = k.borrow();
            Vote::sign(
                VoteKey {
                    kind: VoteKind::Precommit,
                    network_id: g.network_id(),
                    window: p.window(),
                    round: 0,
                    value: Some(Hash32(p.hash())),
                    signer: NodeId::of(k.verifying_key()),
                },
                k,
            )
        })
        .collect();
    Cement::from_votes(&votes).expect("at least one vote")
}

/// Windows 1..=n made by `keys[maker]`, each cemented by all of `keys`
/// (the genesis peers' keys), and the state after the last. `edit` may
/// change a window's checkpoints before it is signed.
pub fn cemented_chain<K: Borrow<NodeKeys>>(
    g: &Genesis,
    keys: &[K],
    maker: usize,
    n: u64,
    mut edit: impl FnMut(u64, &mut Vec<Hash32>),
) -> (Vec<Cemented>, State) {
    let mut tip = Tip::genesis(g);
    let mut state = g.initial_state();
    let mut prev: Option<(NodeId, Cement)> = None;
    let joining = g.joining();
    let none = crate::consensus::joining::Extras::default();
    let mut out = Vec::new();
    for w in 1..=n {
        let mut cps = checkpoints(g, tip.t);
        edit(w, &mut cps);
        let mut paid = Vec::new();
        if let Some((proposer, c)) = &prev {
            let signers: Vec<NodeId> = c.precommits.iter().map(|(id, _)| *id).collect();
            state
                .settle(&crate::consensus::state::Settle {
                    emission: g.emission,
                    joining: &joining,
                    window: w - 1,
                    proposer: *proposer,
                    signers: &signers,
                    extras: &none,
                })
                .unwrap();
            paid.push(*proposer);
            paid.extend(signers);
        }
        let basis = Basis {
            window: w,
            link: tip.hash,
            bundle: prev.as_ref().map_or([0; 32], |(_, c)| c.hash().0),
            state_root: state.root(),
        };
        let p = Proposal::sign(keys[maker].borrow(), g.hash, g.d, basis, cps);
        let cement = cement_of(g, keys, &p);
        tip = tip.after(&p);
        prev = Some((p.header.proposer, cement.clone()));
        out.push(Cemented {
            root: state.root(),
            proposal: p,
            cement,
            prev_bundle: None,
            paid,
            set: g.active_set(),
            certificate: None,
        });
    }
    (out, state)
}
