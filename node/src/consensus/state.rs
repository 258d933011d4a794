//! Consensus state: accounts and the active set, their state root, and the
//! emission paid for each cemented window.
//!
//! Entries (docs/SPEC.md 9.6), sorted by key for the state root
//! ([`super::merkle`]):
//! ```text
//! account: key 0x61 ('a') || node id (33 bytes)  value balance u64 LE
//! member:  key 0x6d ('m') || node id (33 bytes)  value weight u64 LE || ML-DSA-65 public key (1,952)
//! ```
//! Emission for a cemented window: `emission` units are minted. The
//! proposer gets `emission * proposer_bps / 10,000` (rounded down); the
//! rest is split equally among the precommitters of the window's canonical
//! bundle (rounded down), and what the division leaves goes to the proposer,
//! so exactly `emission` units are minted per window. A bundle with no
//! signers pays everything to the proposer. Balances never overflow: a
//! payout that would is refused (the proposal carrying it is invalid).

use std::collections::BTreeMap;

use montana_vdf::Hash32;

use super::active::{ActiveSet, Member, NodeId};
use super::merkle;

const ACCOUNT: u8 = b'a';
const MEMBER: u8 = b'm';

/// The emission rule (from the genesis).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emission {
    /// Units minted per cemented window.
    pub per_window: u64,
    /// The proposer's share, in basis points (0..=10,000).
    pub proposer_bps: u16,
}

impl Emission {
    pub fn new(per_window: u64, proposer_bps: u16) -> Result<Self, String> {
        if proposer_bps > 10_000 {
            return Err(format!("proposer share {proposer_bps} bps is over 10,000"));
        }
        Ok(Emission {
            per_window,
            proposer_bps,
        })
    }
}

/// Why a state change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("balance of {0} would overflow")]
    Overflow(NodeId),
    #[error("bundle signer {0} is listed twice")]
    DuplicateSigner(NodeId),
}

/// Accounts and the active set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    accounts: BTreeMap<NodeId, u64>,
    active: ActiveSet,
}

impl State {
    pub fn new(active: ActiveSet, accounts: BTreeMap<NodeId, u64>) -> Self {
        State { accounts, active }
    }
    pub fn active(&self) -> &ActiveSet {
        &self.active
    }
    pub fn balance(&self, id: &NodeId) -> u64 {
        self.accounts.get(id).copied().unwrap_or(0)
    }
    pub fn accounts(&self) -> &BTreeMap<NodeId, u64> {
        &self.accounts
    }

    /// Pays the emission of one cemented window: `proposer` and the
    /// precommitters of its canonical bundle. All or nothing.
    pub fn pay(
        &mut self,
        emission: Emission,
        proposer: NodeId,
        signers: &[NodeId],
    ) -> Result<(), StateError> {
        let mut sorted = signers.to_vec();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(StateError::DuplicateSigner(w[0]));
        }
        let total = emission.per_window as u128;
        let mut to_proposer = (total * emission.proposer_bps as u128 / 10_000) as u64;
        let rest = emission.per_window - to_proposer;
        let mut credits: BTreeMap<NodeId, u64> = BTreeMap::new();
        if sorted.is_empty() {
            to_proposer += rest;
        } else {
            let each = rest / sorted.len() as u64;
            to_proposer += rest % sorted.len() as u64;
            for s in &sorted {
                *credits.entry(*s).or_default() += each;
            }
        }
        *credits.entry(proposer).or_default() += to_proposer;
        let mut next = self.accounts.clone();
        for (id, amount) in credits {
            if amount == 0 {
                continue;
            }
            let b = next.entry(id).or_default();
            *b = b.checked_add(amount).ok_or(StateError::Overflow(id))?;
        }
        self.accounts = next;
        Ok(())
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> =
            Vec::with_capacity(self.accounts.len() + self.active.len());
        for (id, balance) in &self.accounts {
            out.push((key(ACCOUNT, id), balance.to_le_bytes().to_vec()));
        }
        for Member {
            id,
            key: pk,
            weight,
        } in self.active.members()
        {
            let mut v = weight.to_le_bytes().to_vec();
            v.extend_from_slice(&pk.to_bytes());
            out.push((key(MEMBER, id), v));
        }
        out.sort();
        out
    }

    /// The state root over [`State::entries`].
    pub fn root(&self) -> Hash32 {
        let leaves: Vec<Hash32> = self
            .entries()
            .iter()
            .map(|(k, v)| merkle::leaf(k, v))
            .collect();
        merkle::state_root(&leaves)
    }
}

/// The state entry key of `id`'s account.
pub fn account_key(id: &NodeId) -> Vec<u8> {
    key(ACCOUNT, id)
}

/// The node id of an account entry key; `None` for other entries.
pub fn account_of_key(k: &[u8]) -> Option<NodeId> {
    match k {
        [ACCOUNT, rest @ ..] => rest.try_into().ok().map(NodeId),
        _ => None,
    }
}

fn key(tag: u8, id: &NodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(tag);
    k.extend_from_slice(&id.0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::active::tests::set_of;

    fn state(n: usize) -> (State, Vec<NodeId>) {
        let (set, _) = set_of(n);
        let ids = set.members().iter().map(|m| m.id).collect();
        (State::new(set, BTreeMap::new()), ids)
    }

    #[test]
    fn emission_split_and_rounding() {
        let (mut s, ids) = state(4);
        let e = Emission::new(1_000, 2_000).unwrap();
        // Proposer ids[0] also precommitted; 3 signers share 800: 266 each,
        // 2 left over go to the proposer: 200 + 266 + 2 = 468.
        s.pay(e, ids[0], &[ids[0], ids[1], ids[2]]).unwrap();
        assert_eq!(s.balance(&ids[0]), 468);
        assert_eq!(s.balance(&ids[1]), 266);
        assert_eq!(s.balance(&ids[2]), 266);
        assert_eq!(s.balance(&ids[3]), 0);
        let minted: u64 = s.accounts().values().sum();
        assert_eq!(minted, 1_000, "exactly the emission is minted");
        // No signers: all to the proposer.
        s.pay(e, ids[3], &[]).unwrap();
        assert_eq!(s.balance(&ids[3]), 1_000);
        // Signer order does not matter.
        let (mut a, ids) = state(3);
        let mut b = a.clone();
        a.pay(e, ids[0], &[ids[1], ids[2]]).unwrap();
        b.pay(e, ids[0], &[ids[2], ids[1]]).unwrap();
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn refusals_change_nothing() {
        let (mut s, ids) = state(2);
        let e = Emission::new(10, 0).unwrap();
        let before = s.clone();
        assert_eq!(
            s.pay(e, ids[0], &[ids[1], ids[1]]),
            Err(StateError::DuplicateSigner(ids[1]))
        );
        assert_eq!(s, before);
        let mut full = BTreeMap::new();
        full.insert(ids[1], u64::MAX - 4);
        let mut s = State::new(before.active().clone(), full);
        let snapshot = s.clone();
        assert_eq!(
            s.pay(e, ids[0], &[ids[0], ids[1]]),
            Err(StateError::Overflow(ids[1]))
        );
        assert_eq!(s, snapshot, "all or nothing");
        assert!(Emission::new(1, 10_001).is_err());
    }

    #[test]
    fn the_root_commits_to_every_balance_and_member() {
        let (s, ids) = state(3);
        let r0 = s.root();
        let mut t = s.clone();
        t.pay(Emission::new(1, 10_000).unwrap(), ids[0], &[])
            .unwrap();
        assert_ne!(t.root(), r0, "a balance changes the root");
        let (other, _) = state(3);
        assert_ne!(other.root(), r0, "other members, other root");
        // Insertion order of accounts does not matter.
        let mut fwd = BTreeMap::new();
        let mut rev = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            fwd.insert(*id, i as u64 + 1);
        }
        for (i, id) in ids.iter().enumerate().rev() {
            rev.insert(*id, i as u64 + 1);
        }
        let a = State::new(s.active().clone(), fwd);
        let b = State::new(s.active().clone(), rev);
        assert_eq!(a.root(), b.root());
        // Entries are sorted and accounts come before members ('a' < 'm').
        let e = a.entries();
        assert!(e.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(e.len(), 6);
        assert_eq!(e[0].0[0], b'a');
        assert_eq!(e[5].0[0], b'm');
    }
}
