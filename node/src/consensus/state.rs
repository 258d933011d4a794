//! Consensus state: accounts, the active set and the candidates, their
//! state root, and how each cemented window settles (emission, candidates,
//! members joining and leaving).
//!
//! Entries (docs/SPEC.md 9.6), sorted by key for the state root
//! ([`super::merkle`]):
//! ```text
//! account:   key 0x61 ('a') || node id (33 bytes)  value balance u64 LE
//! candidate: key 0x63 ('c') || node id             value count u32 | last u64 | effective u64 | key (1,952)
//! member:    key 0x6d ('m') || node id             value weight u64 LE || ML-DSA-65 public key (1,952)
//! seen:      key 0x73 ('s') || node id             value the last window it signed a canonical bundle, u64 LE
//! ```
//! Emission for a cemented window: `emission` units are minted. The
//! proposer gets `emission * proposer_bps / 10,000` (rounded down); the
//! rest is split equally among the precommitters of the window's canonical
//! bundle (rounded down), and what the division leaves goes to the proposer,
//! so exactly `emission` units are minted per window. A bundle with no
//! signers pays everything to the proposer. Balances never overflow: a
//! payout that would is refused (the proposal carrying it is invalid).

use std::collections::{BTreeMap, BTreeSet};

use montana_vdf::Hash32;

use super::active::{ActiveSet, Member, NodeId, MAX_ACTIVE};
use super::joining::{Candidate, Extras, JoinRules};
use super::merkle;

const ACCOUNT: u8 = b'a';
const CANDIDATE: u8 = b'c';
const MEMBER: u8 = b'm';
const SEEN: u8 = b's';

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

/// Who takes part beside the accounts: the active set, the candidates and
/// when each member last signed a canonical bundle. Small (at most 300
/// members and the candidates a few windows of proposals carried), so a
/// change copies it whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    pub active: ActiveSet,
    pub candidates: BTreeMap<NodeId, Candidate>,
    /// The last window whose canonical bundle a member signed (or the
    /// window it became a member); absent: 0.
    pub seen: BTreeMap<NodeId, u64>,
}

impl Roster {
    pub fn new(active: ActiveSet) -> Self {
        Roster {
            active,
            candidates: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.candidates.len() + self.active.len() + self.seen.len()
    }

    /// The roster's entries in key order ('c' < 'm' < 's').
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|k, v| out.push((k, v)));
        out
    }

    fn for_each(&self, mut f: impl FnMut(Vec<u8>, Vec<u8>)) {
        for (id, c) in &self.candidates {
            f(key(CANDIDATE, id), c.encode());
        }
        for m in self.active.members() {
            let (k, v) = member_entry(m);
            f(k, v);
        }
        for (id, w) in &self.seen {
            f(key(SEEN, id), w.to_le_bytes().to_vec());
        }
    }

    /// Builds the roster back from its entries (any order); `None` for an
    /// entry that is not a roster entry or does not decode.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Self, String> {
        let mut members = Vec::new();
        let mut candidates = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for (k, v) in entries {
            let (tag, id) = match k {
                [tag, rest @ ..] if rest.len() == 32 => {
                    (*tag, NodeId(rest.try_into().expect("32 bytes")))
                }
                _ => return Err(format!("a state key of {} bytes", k.len())),
            };
            match tag {
                CANDIDATE => {
                    let c = Candidate::decode(v).map_err(|e| e.to_string())?;
                    candidates.insert(id, c);
                }
                MEMBER => {
                    if v.len() != 8 + crate::keys::SIGNING_PUBLIC_LEN {
                        return Err("a member entry of the wrong length".into());
                    }
                    let weight = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                    let key = crate::keys::VerifyingKey::from_bytes(&v[8..])
                        .map_err(|e| format!("a member key: {e}"))?;
                    if NodeId::of(&key) != id {
                        return Err("a member entry whose key is not its id's".into());
                    }
                    members.push(Member { id, key, weight });
                }
                SEEN => {
                    let w: [u8; 8] = v
                        .try_into()
                        .map_err(|_| "a seen entry is not 8 bytes".to_string())?;
                    seen.insert(id, u64::from_le_bytes(w));
                }
                t => return Err(format!("a state entry of unknown tag {t:#04x}")),
            }
        }
        let active = ActiveSet::new(members).map_err(|e| e.to_string())?;
        Ok(Roster {
            active,
            candidates,
            seen,
        })
    }
}

/// Accounts and the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    accounts: BTreeMap<NodeId, u64>,
    roster: Roster,
    /// What the last [`State::root`] computed, to redo only what changed.
    cache: RootCache,
}

/// Leaves per cached subtree: the snapshot chunk size (a power of two, so
/// each block of `CACHE_BLOCK` entries is one subtree of the state tree and
/// the root is the tree over the blocks' hashes, docs/SPEC.md 13.3).
const CACHE_BLOCK: usize = 4096;

/// The subtree hash of every block of [`CACHE_BLOCK`] accounts that holds
/// accounts only, valid for `n` accounts except the blocks holding an
/// account in `dirty`. A balance changed costs one block (4,096 leaves) at
/// the next root, not the whole tree (a million accounts are 2 million
/// hashes); the last block, which the roster shares, is always redone.
#[derive(Default)]
struct RootCache(std::sync::Mutex<CacheInner>);

#[derive(Clone, Default)]
struct CacheInner {
    /// None: nothing cached (new state, or an account added).
    blocks: Option<Vec<Hash32>>,
    n: usize,
    dirty: BTreeSet<NodeId>,
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

/// What settling one cemented window needs beside the state
/// ([`Overlay::settle`]).
#[derive(Clone, Copy, Debug)]
pub struct Settle<'a> {
    pub emission: Emission,
    pub joining: &'a JoinRules,
    /// The window settled (its proposal carried `extras`).
    pub window: u64,
    /// The maker of its proposal.
    pub proposer: NodeId,
    /// The precommitters of its canonical bundle.
    pub signers: &'a [NodeId],
    pub extras: &'a Extras,
}

impl State {
    pub fn new(active: ActiveSet, accounts: BTreeMap<NodeId, u64>) -> Self {
        Self::with_roster(Roster::new(active), accounts)
    }
    pub fn with_roster(roster: Roster, accounts: BTreeMap<NodeId, u64>) -> Self {
        State {
            accounts,
            roster,
            cache: RootCache::default(),
        }
    }
    pub fn active(&self) -> &ActiveSet {
        &self.roster.active
    }
    pub fn roster(&self) -> &Roster {
        &self.roster
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

    /// [`Overlay::settle`] applied to this state.
    pub fn settle(&mut self, s: &Settle<'_>) -> Result<(), StateError> {
        let mut next = self.overlay();
        next.settle(s)?;
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
            changes: Changes::default(),
        }
    }

    /// Makes `changes` (from [`Overlay::into_changes`]) part of the state.
    pub fn apply(&mut self, changes: Changes) {
        let mut cache = self.cache.0.lock().unwrap();
        for (id, balance) in changes.balances {
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
        if let Some(r) = changes.roster {
            self.roster = r;
        }
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> =
            Vec::with_capacity(self.accounts.len() + self.roster.len());
        for (id, balance) in &self.accounts {
            out.push((key(ACCOUNT, id), balance.to_le_bytes().to_vec()));
        }
        out.extend(self.roster.entries());
        debug_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        out
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.accounts.len() + self.roster.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state root over [`State::entries`]: the tree over the hashes
    /// of its blocks of [`CACHE_BLOCK`] entries; the blocks that hold
    /// accounts only are cached until one of their accounts changes (all of
    /// them when an account is added). Leaves are streamed: accounts (key
    /// 'a') sort before the roster's entries, each group in id order, so
    /// the entries come in key order without being built.
    pub fn root(&self) -> Hash32 {
        let full = self.accounts.len() / CACHE_BLOCK;
        let mut cache = self.cache.0.lock().unwrap();
        let redo: Option<BTreeSet<usize>> = match &cache.blocks {
            Some(b) if cache.n == self.accounts.len() && b.len() == full => {
                Some(blocks_of(&self.accounts, cache.dirty.iter(), full))
            }
            _ => None,
        };
        let blocks = full_blocks(
            &self.accounts,
            full,
            cache.blocks.take().filter(|_| redo.is_some()),
            redo.as_ref(),
            &|_, b| b,
        );
        let root = root_from(
            &blocks,
            self.accounts.len() + self.roster.len(),
            self.accounts
                .iter()
                .skip(full * CACHE_BLOCK)
                .map(|(id, b)| (id, *b)),
            &self.roster,
        );
        cache.blocks = Some(blocks);
        cache.n = self.accounts.len();
        cache.dirty.clear();
        root
    }
}

/// A candidate's (count, last counted window) after a proof for `window`
/// counts (settling step 3): one more if `last` is the window before, else
/// the count starts again at 1.
pub fn counted(count: u32, last: u64, window: u64) -> (u32, u64) {
    if count > 0 && last + 1 == window {
        (count.saturating_add(1), window)
    } else {
        (1, window)
    }
}

/// The member entries of a state with the entry just before and just after
/// them (where they exist), proved against the state root by a range proof
/// (docs/SPEC.md 13.4): what a membership certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersRange {
    /// Entries in the state.
    pub entries: u64,
    /// Index of the first entry of `range`.
    pub first: u64,
    pub range: Vec<(Vec<u8>, Vec<u8>)>,
    pub proof: Vec<Hash32>,
}

impl State {
    /// The members' range and its proof. Costs O(log n) subtree hashes
    /// from the blocks [`State::root`] caches, and the leaves of the few
    /// blocks around the roster.
    pub fn members_range(&self) -> MembersRange {
        let _ = self.root();
        let blocks = self
            .cache
            .0
            .lock()
            .unwrap()
            .blocks
            .clone()
            .unwrap_or_default();
        let n = self.len() as u64;
        let start = (self.accounts.len() + self.roster.candidates.len()) as u64;
        let first = start.saturating_sub(1);
        let end = (start + self.roster.active.len() as u64 + 1).min(n);
        let block = CACHE_BLOCK as u64;
        let cached = blocks.len() as u64 * block;
        let proof = merkle::range_proof_with(n, first, end, &mut |lo, hi| {
            if hi <= cached && lo % block == 0 && (hi - lo) % block == 0 {
                merkle::mth(&blocks[(lo / block) as usize..(hi / block) as usize])
            } else {
                let leaves: Vec<Hash32> = self
                    .entries_in(lo, hi)
                    .iter()
                    .map(|(k, v)| merkle::leaf(k, v))
                    .collect();
                merkle::mth(&leaves)
            }
        });
        MembersRange {
            entries: n,
            first,
            range: self.entries_in(first, end),
            proof,
        }
    }

    /// The entries `[lo, hi)` in key order (walks the accounts before `lo`
    /// without building them).
    fn entries_in(&self, lo: u64, hi: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        let na = self.accounts.len() as u64;
        let mut out = Vec::with_capacity(hi.saturating_sub(lo) as usize);
        if lo < na {
            for (id, b) in self
                .accounts
                .iter()
                .skip(lo as usize)
                .take((hi.min(na) - lo) as usize)
            {
                out.push((key(ACCOUNT, id), b.to_le_bytes().to_vec()));
            }
        }
        if hi > na {
            let from = lo.saturating_sub(na) as usize;
            out.extend(
                self.roster
                    .entries()
                    .into_iter()
                    .skip(from)
                    .take((hi - na.max(lo)) as usize),
            );
        }
        out
    }
}

/// The blocks (below `full`) that hold one of `ids`, in one ordered pass.
fn blocks_of<'a>(
    accounts: &BTreeMap<NodeId, u64>,
    ids: impl Iterator<Item = &'a NodeId>,
    full: usize,
) -> BTreeSet<usize> {
    let mut ids = ids.peekable();
    let mut blocks = BTreeSet::new();
    for (i, id) in accounts.keys().enumerate() {
        if i >= full * CACHE_BLOCK {
            break;
        }
        let Some(d) = ids.peek() else { break };
        if *d == id {
            blocks.insert(i / CACHE_BLOCK);
            ids.next();
        }
    }
    blocks
}

/// The hashes of the `full` blocks of accounts only: `cached` with the
/// blocks in `redo` hashed again, or all of them hashed when nothing is
/// cached; `balance(id, stored)` is the balance to hash.
fn full_blocks(
    accounts: &BTreeMap<NodeId, u64>,
    full: usize,
    cached: Option<Vec<Hash32>>,
    redo: Option<&BTreeSet<usize>>,
    balance: &dyn Fn(&NodeId, u64) -> u64,
) -> Vec<Hash32> {
    let mut blocks = match cached {
        Some(b) if redo.is_some() => b,
        _ => vec![Hash32([0; 32]); full],
    };
    let all = redo.is_none();
    if !all && redo.is_some_and(|r| r.is_empty()) {
        return blocks;
    }
    let wanted = |b: usize| all || redo.is_some_and(|r| r.contains(&b));
    let mut tree = merkle::Streaming::default();
    for (i, (id, b)) in accounts.iter().enumerate().take(full * CACHE_BLOCK) {
        let block = i / CACHE_BLOCK;
        if wanted(block) {
            tree.push(account_leaf(id, balance(id, *b)));
            if i % CACHE_BLOCK == CACHE_BLOCK - 1 {
                blocks[block] = std::mem::take(&mut tree).tree();
            }
        }
    }
    blocks
}

/// The root over `n` entries: the cached `full` blocks, then the blocks of
/// the remaining accounts (`rest`, in key order) and the roster.
fn root_from<'a>(
    full: &[Hash32],
    n: usize,
    rest: impl Iterator<Item = (&'a NodeId, u64)>,
    roster: &Roster,
) -> Hash32 {
    let mut blocks = full.to_vec();
    let mut tree = merkle::Streaming::default();
    let mut i = full.len() * CACHE_BLOCK;
    let mut push = |leaf: Hash32, blocks: &mut Vec<Hash32>| {
        tree.push(leaf);
        i += 1;
        if i.is_multiple_of(CACHE_BLOCK) {
            blocks.push(std::mem::take(&mut tree).tree());
        }
    };
    for (id, b) in rest {
        push(account_leaf(id, b), &mut blocks);
    }
    roster.for_each(|k, v| push(merkle::leaf(&k, &v), &mut blocks));
    if !tree.is_empty() {
        blocks.push(tree.tree());
    }
    merkle::root_of(n as u64, &merkle::mth(&blocks))
}

/// What an [`Overlay`] changed: new balances by account, and the roster
/// when it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub balances: BTreeMap<NodeId, u64>,
    pub roster: Option<Roster>,
}

/// A [`State`] with changes on top (see [`State::overlay`]).
#[derive(Debug)]
pub struct Overlay<'a> {
    base: &'a State,
    changes: Changes,
}

impl Overlay<'_> {
    pub fn balance(&self, id: &NodeId) -> u64 {
        self.changes
            .balances
            .get(id)
            .copied()
            .unwrap_or_else(|| self.base.balance(id))
    }

    /// The roster with the changes.
    pub fn roster(&self) -> &Roster {
        self.changes.roster.as_ref().unwrap_or(&self.base.roster)
    }

    /// The changes from the base.
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
        self.changes.balances.extend(next);
        Ok(())
    }

    /// Settles one cemented window (docs/SPEC.md 9.6 and 9.9), in this
    /// order, all or nothing:
    /// 1. the emission is paid (its maker and its bundle's signers);
    /// 2. each member among the signers is seen at the window;
    /// 3. each candidate proof the window's proposal carried counts: one
    ///    more if the candidate's last counted window is the one before,
    ///    else the count starts again at 1 (a new candidate starts at 1);
    /// 4. its registration (if any) sets the candidate's effective window
    ///    to window + activation_delay;
    /// 5. registered candidates whose effective window is at most
    ///    window + 1 become members of weight 1, in (effective window, id)
    ///    order while the set has room, seen at the window;
    /// 6. members not seen for `inactive_windows` windows leave (never the
    ///    last one); candidates not registered and not counted for that
    ///    long, and registered ones still without a seat that long after
    ///    their effective window, are forgotten.
    ///
    /// The proposal's extras were checked when it was validated
    /// ([`crate::chain`]): here they are applied as they are.
    pub fn settle(&mut self, s: &Settle<'_>) -> Result<(), StateError> {
        self.pay(s.emission, s.proposer, s.signers)?;
        let before = self.roster();
        let mut r = before.clone();
        let w = s.window;
        for id in s.signers {
            if r.active.get(id).is_some() {
                r.seen.insert(*id, w);
            }
        }
        for p in &s.extras.proofs {
            let c = r.candidates.entry(p.id).or_insert_with(|| Candidate {
                key: p.key.clone(),
                count: 0,
                last: 0,
                effective: None,
            });
            (c.count, c.last) = counted(c.count, c.last, p.window);
        }
        if let Some(g) = &s.extras.registration {
            if let Some(c) = r.candidates.get_mut(&g.id) {
                c.effective = Some(w + s.joining.activation_delay as u64);
            }
        }
        let mut due: Vec<(u64, NodeId)> = r
            .candidates
            .iter()
            .filter_map(|(id, c)| c.effective.filter(|e| *e <= w + 1).map(|e| (e, *id)))
            .collect();
        // First registered, first seated (not the lowest id: ids can be
        // ground, and a backlog forms only when the set is full).
        due.sort();
        if !due.is_empty() {
            let mut members = r.active.members().to_vec();
            for (_, id) in due {
                if members.len() >= MAX_ACTIVE {
                    break;
                }
                let c = r.candidates.remove(&id).expect("listed");
                members.push(Member {
                    id,
                    key: c.key,
                    weight: 1,
                });
                r.seen.insert(id, w);
            }
            r.active = ActiveSet::new(members).expect("new members are not members yet");
        }
        let gone = s.joining.inactive_windows as u64;
        let absent: Vec<NodeId> = r
            .active
            .members()
            .iter()
            .map(|m| m.id)
            .filter(|id| w.saturating_sub(r.seen.get(id).copied().unwrap_or(0)) >= gone)
            .collect();
        if !absent.is_empty() {
            let mut members: Vec<Member> = r
                .active
                .members()
                .iter()
                .filter(|m| !absent.contains(&m.id))
                .cloned()
                .collect();
            if members.is_empty() {
                // Never the last one: keep the one seen last (lowest id on
                // a tie), so that the set stays valid.
                let keep = r
                    .active
                    .members()
                    .iter()
                    .max_by_key(|m| {
                        (
                            r.seen.get(&m.id).copied().unwrap_or(0),
                            std::cmp::Reverse(m.id),
                        )
                    })
                    .expect("a set is never empty")
                    .clone();
                members.push(keep);
            }
            let ids: BTreeSet<NodeId> = members.iter().map(|m| m.id).collect();
            r.seen.retain(|id, _| ids.contains(id));
            r.active = ActiveSet::new(members).expect("a subset of a valid set");
        }
        r.candidates.retain(|_, c| match c.effective {
            // Registered, still waiting for a seat: not for ever.
            Some(e) => w.saturating_sub(e) < gone,
            None => w.saturating_sub(c.last) < gone,
        });
        if r != *before {
            self.changes.roster = Some(r);
        }
        Ok(())
    }

    /// The state root of the base with the changes: the base's cached
    /// blocks, with the blocks holding a changed account redone; when an
    /// account is new (entries move) every block is redone.
    pub fn root(&self) -> Hash32 {
        if self.changes == Changes::default() {
            return self.base.root();
        }
        let base = self.base;
        let roster = self.roster();
        let added: Vec<(&NodeId, u64)> = self
            .changes
            .balances
            .iter()
            .filter(|(id, _)| !base.accounts.contains_key(id))
            .map(|(id, b)| (id, *b))
            .collect();
        if !added.is_empty() {
            // New accounts move the entries after them: merge them in, in
            // key order, and hash everything.
            let mut new = added.into_iter().peekable();
            let mut merged: Vec<(&NodeId, u64)> =
                Vec::with_capacity(base.accounts.len() + new.len());
            for id in base.accounts.keys() {
                while let Some((x, b)) = new.next_if(|(x, _)| *x < id) {
                    merged.push((x, b));
                }
                merged.push((id, self.balance(id)));
            }
            merged.extend(new);
            let n = merged.len() + roster.len();
            return root_from(&[], n, merged.into_iter(), roster);
        }
        // Same accounts, some balances changed: the base's blocks (brought
        // up to date), with the blocks of the changed accounts redone.
        base.root();
        let full = base.accounts.len() / CACHE_BLOCK;
        let cached = base.cache.0.lock().unwrap().blocks.clone();
        let redo = blocks_of(&base.accounts, self.changes.balances.keys(), full);
        let changes = &self.changes.balances;
        let blocks = full_blocks(&base.accounts, full, cached, Some(&redo), &|id, b| {
            changes.get(id).copied().unwrap_or(b)
        });
        root_from(
            &blocks,
            base.accounts.len() + roster.len(),
            base.accounts
                .iter()
                .skip(full * CACHE_BLOCK)
                .map(|(id, _)| (id, self.balance(id))),
            roster,
        )
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

    /// A full set (300 members, every one seen at window 9 but `gone`)
    /// with registered candidates `(id byte, effective window)` waiting
    /// for a seat, and the rules with `inactive_windows` 4.
    fn full_set_with_backlog(gone: Option<usize>, backlog: &[(u8, u64)]) -> (State, JoinRules) {
        let (set, keys) = set_of(MAX_ACTIVE);
        let mut roster = Roster::new(set.clone());
        for (i, m) in set.members().iter().enumerate() {
            if Some(i) != gone {
                roster.seen.insert(m.id, 9);
            }
        }
        for (b, e) in backlog {
            roster.candidates.insert(
                NodeId([*b; 32]),
                Candidate {
                    key: keys[0].verifying_key().clone(),
                    count: 3,
                    last: 4,
                    effective: Some(*e),
                },
            );
        }
        let mut j = JoinRules::defaults(100_000);
        j.inactive_windows = 4;
        (State::with_roster(roster, BTreeMap::new()), j)
    }

    fn settle_at(s: &mut State, w: u64, j: &JoinRules) {
        // Everyone with a seen entry signs (the member never seen has none).
        let signers: Vec<NodeId> = s.roster().seen.keys().copied().collect();
        let proposer = signers[0];
        s.settle(&Settle {
            emission: Emission::new(1_000, 2_000).unwrap(),
            joining: j,
            window: w,
            proposer,
            signers: &signers,
            extras: &Extras::default(),
        })
        .unwrap();
    }

    /// Registered candidates waiting for a seat in a full set were kept for
    /// ever (each costs a few candidate windows, and the roster, every
    /// root and every snapshot grew with them): now they are forgotten
    /// `inactive_windows` after their effective window (fails before: all
    /// three kept).
    #[test]
    fn registered_candidates_without_a_seat_are_forgotten_in_time() {
        let (mut s, j) = full_set_with_backlog(None, &[(1, 6), (2, 8), (3, 9)]);
        settle_at(&mut s, 10, &j);
        let left: Vec<u8> = s.roster().candidates.keys().map(|id| id.0[0]).collect();
        assert_eq!(left, vec![2, 3], "10 - 6 >= 4: the first is forgotten");
        assert_eq!(s.active().len(), MAX_ACTIVE);
        settle_at(&mut s, 13, &j);
        assert!(s.roster().candidates.is_empty());
    }

    /// When a seat frees, the candidate registered first takes it, not the
    /// lowest id (ids can be ground; fails before: id 1 took it).
    #[test]
    fn a_freed_seat_goes_to_the_candidate_registered_first() {
        let (mut s, j) = full_set_with_backlog(Some(7), &[(1, 9), (0xee, 8)]);
        // Window 10: the member never seen leaves; window 11 seats one.
        settle_at(&mut s, 10, &j);
        assert_eq!(s.active().len(), MAX_ACTIVE - 1);
        settle_at(&mut s, 11, &j);
        assert_eq!(s.active().len(), MAX_ACTIVE);
        assert!(s.active().index_of(&NodeId([0xee; 32])).is_some());
        assert!(s.roster().candidates.contains_key(&NodeId([1; 32])));
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
        assert_eq!(o.changes().balances.len(), 1);
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
        State::with_roster(s.roster().clone(), s.accounts().clone()).root()
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

    /// The members' range proves against the root, whatever the number of
    /// accounts around the cached blocks (none, one, a block less one, a
    /// block, a block and one, several blocks), with candidates before the
    /// members and seen entries after them; the range holds every member
    /// and one neighbour on each side that exists, and a changed entry or
    /// another root does not prove.
    #[test]
    fn the_members_range_proves_against_the_root() {
        let (_, keys) = set_of(3);
        for n in [0u64, 1, 4_095, 4_096, 4_097, 8_192, 12_289] {
            for with_roster in [false, true] {
                let (mut s, ids, _) = many_accounts(n);
                if with_roster {
                    let mut r = s.roster().clone();
                    for (i, k) in keys.iter().enumerate() {
                        let key = k.verifying_key().clone();
                        let id = NodeId::of(&key);
                        let c = Candidate {
                            key,
                            count: i as u32 + 1,
                            last: 7,
                            effective: None,
                        };
                        r.candidates.insert(id, c);
                    }
                    r.seen.insert(ids[1], 5);
                    s.apply(Changes {
                        balances: BTreeMap::new(),
                        roster: Some(r),
                    });
                }
                let root = s.root();
                let m = s.members_range();
                let leaves: Vec<Hash32> = m.range.iter().map(|(k, v)| merkle::leaf(k, v)).collect();
                assert_eq!(m.entries, s.len() as u64);
                assert!(
                    merkle::verify_range(&root, m.entries, m.first, &leaves, &m.proof),
                    "{n} accounts, roster {with_roster}"
                );
                let members = m.range.iter().filter(|(k, _)| k[0] == MEMBER).count();
                assert_eq!(members, 4);
                let all = s.entries();
                assert_eq!(&all[m.first as usize..][..m.range.len()], &m.range[..]);
                assert!(m.first == 0 || m.range[0].0[0] != MEMBER);
                let last = &m.range[m.range.len() - 1];
                assert!(m.first + m.range.len() as u64 == m.entries || last.0[0] != MEMBER);
                let mut bad = leaves.clone();
                bad[1] = merkle::leaf(b"x", b"y");
                assert!(!merkle::verify_range(
                    &root, m.entries, m.first, &bad, &m.proof
                ));
                assert!(!merkle::verify_range(
                    &Hash32([9; 32]),
                    m.entries,
                    m.first,
                    &leaves,
                    &m.proof
                ));
            }
        }
    }
}
