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
    /// What the last [`State::root`] computed, to redo only what changed.
    cache: RootCache,
}

/// Leaves per cached subtree: the snapshot chunk size (a power of two, so
/// each block of `CACHE_BLOCK` entries is one subtree of the state tree and
/// the root is the tree over the blocks' hashes, docs/SPEC.md 13.3).
const CACHE_BLOCK: usize = 4096;

/// The subtree hash of every block of [`CACHE_BLOCK`] entries, valid for
/// `n` entries except the blocks holding an account in `dirty`. A balance
/// changed costs one block (4,096 leaves) at the next root, not the whole
/// tree (a million accounts are 2 million hashes).
#[derive(Default)]
struct RootCache(std::sync::Mutex<CacheInner>);

#[derive(Clone, Default)]
struct CacheInner {
    /// None: nothing cached (new state, or an account added).
    blocks: Option<Vec<Hash32>>,
    n: usize,
    dirty: std::collections::BTreeSet<NodeId>,
}

impl Clone for RootCache {
    fn clone(&self) -> Self {
        RootCache(std::sync::Mutex::new(self.0.lock().unwrap().clone()))
    }
}

impl PartialEq for RootCache {
    fn eq(&self, _: &Self) -> bool {
        true // derived from the state, which is compared
    }
}

impl Eq for RootCache {}

impl std::fmt::Debug for RootCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootCache")
    }
}

impl State {
    pub fn new(active: ActiveSet, accounts: BTreeMap<NodeId, u64>) -> Self {
        State {
            accounts,
            active,
            cache: RootCache::default(),
        }
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
        let mut next = self.overlay();
        next.pay(emission, proposer, signers)?;
        let changes = next.changes;
        self.apply(changes);
        Ok(())
    }

    /// A view of this state with changes on top, for the states after one
    /// or more payments before any is final: the accounts are never copied
    /// (a million of them are 100 MB) and [`Overlay::root`] redoes only the
    /// blocks the changes touch.
    pub fn overlay(&self) -> Overlay<'_> {
        Overlay {
            base: self,
            changes: BTreeMap::new(),
        }
    }

    /// Sets the balances in `changes` (from [`Overlay::into_changes`]).
    pub fn apply(&mut self, changes: Changes) {
        let mut cache = self.cache.0.lock().unwrap();
        for (id, balance) in changes {
            match self.accounts.entry(id) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    *e.get_mut() = balance;
                    cache.dirty.insert(id);
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(balance);
                    // Every entry after it moves: nothing cached holds.
                    cache.blocks = None;
                }
            }
        }
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

    /// The state root over [`State::entries`]: the tree over the hashes
    /// of its blocks of [`CACHE_BLOCK`] entries, each cached until one of
    /// its accounts changes (all of them when an account is added). Leaves
    /// are streamed: accounts (key 'a') sort before members ('m') and each
    /// group is kept in id order, so the entries come in key order without
    /// being built.
    pub fn root(&self) -> Hash32 {
        let n = self.accounts.len() + self.active.len();
        let mut cache = self.cache.0.lock().unwrap();
        let stale: Option<std::collections::BTreeSet<usize>> = match &cache.blocks {
            Some(_) if cache.n == n => {
                // The blocks of the dirty accounts: one ordered pass over
                // the ids (no hashing).
                let mut dirty = cache.dirty.iter().peekable();
                let mut blocks = std::collections::BTreeSet::new();
                for (i, id) in self.accounts.keys().enumerate() {
                    let Some(d) = dirty.peek() else { break };
                    if *d == id {
                        blocks.insert(i / CACHE_BLOCK);
                        dirty.next();
                    }
                }
                Some(blocks)
            }
            _ => None,
        };
        let all = stale.is_none();
        let redo = |b: usize| stale.as_ref().is_none_or(|s| s.contains(&b));
        let mut fresh: BTreeMap<usize, merkle::Streaming> = BTreeMap::new();
        if all || !stale.as_ref().is_some_and(|s| s.is_empty()) {
            self.for_each_entry(|i, e| {
                let b = i / CACHE_BLOCK;
                if redo(b) {
                    fresh.entry(b).or_default().push(entry_leaf(e));
                }
            });
        }
        let blocks = cache.blocks.get_or_insert_with(Vec::new);
        if all {
            blocks.clear();
        }
        for (b, tree) in fresh {
            let h = tree.tree();
            match blocks.get_mut(b) {
                Some(x) => *x = h,
                None => blocks.push(h),
            }
        }
        cache.n = n;
        cache.dirty.clear();
        merkle::root_of(
            n as u64,
            &merkle::mth(cache.blocks.as_deref().unwrap_or(&[])),
        )
    }

    /// Calls `f(i, entry)` for every entry in key order.
    fn for_each_entry(&self, mut f: impl FnMut(usize, EntryRef<'_>)) {
        let mut i = 0;
        for (id, balance) in &self.accounts {
            f(i, EntryRef::Account(id, *balance));
            i += 1;
        }
        for m in self.active.members() {
            f(i, EntryRef::Member(m));
            i += 1;
        }
    }
}

/// New balances by account, to set on a [`State`].
pub type Changes = BTreeMap<NodeId, u64>;

/// A [`State`] with balances changed on top (see [`State::overlay`]).
#[derive(Debug)]
pub struct Overlay<'a> {
    base: &'a State,
    /// New balances.
    changes: BTreeMap<NodeId, u64>,
}

impl Overlay<'_> {
    pub fn balance(&self, id: &NodeId) -> u64 {
        self.changes
            .get(id)
            .copied()
            .unwrap_or_else(|| self.base.balance(id))
    }

    /// The accounts changed from the base, with their new balances.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// [`State::pay`] on top of this view. All or nothing.
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
        credits.retain(|_, amount| *amount > 0);
        // Every credit is checked before any is made.
        let mut next = Vec::with_capacity(credits.len());
        for (id, amount) in credits {
            let b = self
                .balance(&id)
                .checked_add(amount)
                .ok_or(StateError::Overflow(id))?;
            next.push((id, b));
        }
        self.changes.extend(next);
        Ok(())
    }

    /// The state root of the base with the changes: the base's cached
    /// blocks, with the blocks holding a changed account redone; when an
    /// account is new (entries move) every block is redone.
    pub fn root(&self) -> Hash32 {
        if self.changes.is_empty() {
            return self.base.root();
        }
        let base = self.base;
        let n = base.accounts.len() + base.active.len();
        if self
            .changes
            .keys()
            .any(|id| !base.accounts.contains_key(id))
        {
            // New accounts move the entries after them: merge them in, in
            // key order, and hash everything.
            let mut tree = merkle::Streaming::default();
            let mut new = self
                .changes
                .iter()
                .filter(|(id, _)| !base.accounts.contains_key(id))
                .peekable();
            for id in base.accounts.keys() {
                while let Some((x, b)) = new.next_if(|(x, _)| *x < id) {
                    tree.push(account_leaf(x, *b));
                }
                tree.push(account_leaf(id, self.balance(id)));
            }
            for (x, b) in new {
                tree.push(account_leaf(x, *b));
            }
            for m in base.active.members() {
                tree.push(entry_leaf(EntryRef::Member(m)));
            }
            return tree.root();
        }
        // Same entries, some balances changed: the base's blocks (brought
        // up to date), with the blocks of the changed accounts redone.
        base.root();
        let mut blocks = base
            .cache
            .0
            .lock()
            .unwrap()
            .blocks
            .clone()
            .unwrap_or_default();
        let mut redo = std::collections::BTreeSet::new();
        let mut wanted = self.changes.keys().peekable();
        for (i, id) in base.accounts.keys().enumerate() {
            let Some(w) = wanted.peek() else { break };
            if *w == id {
                redo.insert(i / CACHE_BLOCK);
                wanted.next();
            }
        }
        let mut fresh: BTreeMap<usize, merkle::Streaming> = BTreeMap::new();
        base.for_each_entry(|i, e| {
            let b = i / CACHE_BLOCK;
            if redo.contains(&b) {
                let e = match e {
                    EntryRef::Account(id, _) => EntryRef::Account(id, self.balance(id)),
                    m => m,
                };
                fresh.entry(b).or_default().push(entry_leaf(e));
            }
        });
        for (b, tree) in fresh {
            blocks[b] = tree.tree();
        }
        merkle::root_of(n as u64, &merkle::mth(&blocks))
    }
}

/// One state entry, borrowed.
#[derive(Clone, Copy)]
enum EntryRef<'a> {
    Account(&'a NodeId, u64),
    Member(&'a Member),
}

fn entry_leaf(e: EntryRef<'_>) -> Hash32 {
    match e {
        EntryRef::Account(id, balance) => account_leaf(id, balance),
        EntryRef::Member(m) => {
            let (k, v) = member_entry(m);
            merkle::leaf(&k, &v)
        }
    }
}

fn account_leaf(id: &NodeId, balance: u64) -> Hash32 {
    let mut key = [ACCOUNT; 33];
    key[1..].copy_from_slice(&id.0);
    merkle::leaf(&key, &balance.to_le_bytes())
}

/// The state entry key of `id`'s account.
pub fn account_key(id: &NodeId) -> Vec<u8> {
    key(ACCOUNT, id)
}

/// The state entry of a member: key 'm' || id, value weight u64 LE ||
/// its ML-DSA-65 public key.
pub fn member_entry(m: &Member) -> (Vec<u8>, Vec<u8>) {
    let mut v = Vec::with_capacity(8 + 1_952);
    v.extend_from_slice(&m.weight.to_le_bytes());
    v.extend_from_slice(&m.key.to_bytes());
    (key(MEMBER, &m.id), v)
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
    use montana_vdf::HashSuite;

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

    /// The root is the root of the sorted entries, at sizes around the
    /// powers of two (where the tree's shape changes) and the cache's
    /// block size.
    #[test]
    fn the_root_is_the_root_of_the_entries() {
        let (set, _) = set_of(3);
        for n in [
            0usize, 1, 2, 3, 5, 8, 13, 16, 17, 31, 64, 100, 4092, 4093, 4095, 8200,
        ] {
            let accounts: BTreeMap<NodeId, u64> = (0..n as u64)
                .map(|i| (NodeId(HashSuite::Sha256.hash(&i.to_le_bytes()).0), i + 1))
                .collect();
            let s = State::new(set.clone(), accounts);
            let leaves: Vec<Hash32> = s
                .entries()
                .iter()
                .map(|(k, v)| merkle::leaf(k, v))
                .collect();
            assert_eq!(s.root(), merkle::state_root(&leaves), "{n} accounts");
        }
    }

    /// An overlay's root is the root of the state it stands for (paid
    /// the same way), for balances changed in place and accounts added,
    /// over one payment and several; the base is left as it was.
    #[test]
    fn an_overlay_root_is_the_root_of_the_paid_state() {
        let (base, ids, existing) = many_accounts(9_000);
        let before = base.root();
        let e = Emission::new(1_000, 5_000).unwrap();
        let cases: Vec<Vec<(NodeId, Vec<NodeId>)>> = vec![
            vec![(ids[0], ids[1..3].to_vec())],
            vec![(existing[3], vec![existing[8_999]])],
            vec![
                (existing[4_100], vec![]),
                (existing[10], vec![existing[4_100]]),
            ],
            vec![(existing[1], vec![ids[2]]), (ids[3], vec![existing[2]])],
        ];
        for (k, pays) in cases.iter().enumerate() {
            let mut o = base.overlay();
            let mut paid = base.clone();
            for (p, signers) in pays {
                o.pay(e, *p, signers).unwrap();
                paid.pay(e, *p, signers).unwrap();
                assert_eq!(o.root(), fresh_root(&paid), "case {k}");
                assert_eq!(o.balance(p), paid.balance(p));
            }
            assert_eq!(base.root(), before, "the base is unchanged");
        }
        // A refused payment leaves the overlay as it was.
        let mut o = base.overlay();
        o.pay(e, ids[0], &[]).unwrap();
        let r = o.root();
        assert!(o.pay(e, ids[0], &[ids[1], ids[1]]).is_err());
        assert_eq!(o.root(), r);
        assert_eq!(o.changes().len(), 1);
    }

    /// Four members without accounts and `n` accounts of balance 1: the
    /// state, the members' ids, the accounts' ids in key order.
    fn many_accounts(n: u64) -> (State, Vec<NodeId>, Vec<NodeId>) {
        let (set, _) = set_of(4);
        let ids: Vec<NodeId> = set.members().iter().map(|m| m.id).collect();
        let accounts: BTreeMap<NodeId, u64> = (0..n)
            .map(|i| (NodeId(HashSuite::Sha256.hash(&i.to_le_bytes()).0), 1))
            .collect();
        let existing: Vec<NodeId> = accounts.keys().copied().collect();
        (State::new(set, accounts), ids, existing)
    }

    fn fresh_root(s: &State) -> Hash32 {
        State::new(s.active().clone(), s.accounts().clone()).root()
    }

    /// Payments after a root was cached (balances changed in one block or
    /// several, accounts added before, inside and after cached blocks, the
    /// state cloned in between) give the root computed from scratch.
    #[test]
    fn the_cached_root_follows_every_change() {
        let (mut s, ids, existing) = many_accounts(10_000);
        let e = Emission::new(1_000, 5_000).unwrap();
        s.root();
        // Members are paid for the first time: accounts added.
        s.pay(e, ids[0], &ids[1..3]).unwrap();
        assert_eq!(s.root(), fresh_root(&s));
        // The same accounts again: balances changed, no account added.
        for round in 0..3 {
            s.pay(e, ids[round % 3], &ids[..3]).unwrap();
            assert_eq!(s.root(), fresh_root(&s), "round {round}");
        }
        // Accounts in the first, middle and last blocks change (existing
        // accounts, as the emission pays them once they are members).
        for k in [0usize, 4_095, 4_096, 9_999] {
            s.pay(e, existing[k], &[existing[(k + 1) % 10_000]])
                .unwrap();
            assert_eq!(s.root(), fresh_root(&s), "account {k}");
        }
        // A clone keeps its own cache.
        let mut t = s.clone();
        t.pay(e, existing[5], &[]).unwrap();
        assert_eq!(s.root(), fresh_root(&s));
        assert_eq!(t.root(), fresh_root(&t));
        assert_ne!(s.root(), t.root());
        // Two payments between roots, then a member's first payment.
        t.pay(e, existing[6000], &[]).unwrap();
        t.pay(e, existing[7], &[]).unwrap();
        assert_eq!(t.root(), fresh_root(&t));
        t.pay(e, ids[3], &[]).unwrap();
        assert_eq!(t.root(), fresh_root(&t));
    }
}
