//! Agreement on one window: Tendermint's propose / prevote / precommit with
//! locks, without I/O.
//!
//! One [`Agreement`] decides which proposal becomes window `w`. It takes
//! events (a proposal's header seen, the result of validating a proposal, a
//! vote, a timeout, a progress beacon) and returns [`Output`]s (propose,
//! validate, sign and send a vote, arm a timer, decide). Signatures,
//! membership of the sender and the proposal's own checks are the caller's;
//! votes reach this machine already checked, and the machine counts each
//! signer once per (round, kind).
//!
//! Values are proposal hashes. `valid(v)` is the caller's verdict on the
//! proposal with hash `v` (header, state root, VDF proof), asked for with
//! [`Output::Validate`] and answered with [`Agreement::on_validated`].
//! "quorum" is [`Quorum::reached`] over the active set's weights (2f+1 in
//! the paper), "skip" is [`Quorum::skip`] (f+1).
//!
//! The rules (numbered as in Buchman, Kwon, Milosevic, "The latest gossip on
//! BFT consensus", 2018, Algorithm 1):
//! ```text
//! start_round(r): round = r; step = propose
//!   if proposer(r) == me: propose(valid_value if any, else a new value, valid_round)
//!   else arm timeout_propose(r)
//! L22 proposal(r, v, vr = none) from proposer(r), step = propose:
//!   prevote(r, v if valid(v) and (locked none or locked_value == v) else nil); step = prevote
//! L28 proposal(r, v, vr) from proposer(r), quorum prevotes(vr, v), step = propose, vr < r:
//!   prevote(r, v if valid(v) and (locked_round <= vr or locked_value == v) else nil); step = prevote
//! L34 quorum prevotes(round, any), step = prevote, first time: arm timeout_prevote(round)
//! L36 proposal(round, v), quorum prevotes(round, v), valid(v), step >= prevote, first time:
//!   if step = prevote: lock (v, round); precommit(round, v); step = precommit
//!   valid_value = v; valid_round = round
//! L44 quorum prevotes(round, nil), step = prevote: precommit(round, nil); step = precommit
//! L47 quorum precommits(round, any), first time: arm timeout_precommit(round)
//! L49 proposal(r, v), quorum precommits(r, v) for ANY round r, valid(v), not decided:
//!   decide v (the Cement is those precommits)
//! L55 skip-weight of messages of a round r > round: start_round(r)
//! timeout_propose(r), round = r, step = propose: prevote(r, nil); step = prevote
//! timeout_prevote(r), round = r, step = prevote: precommit(r, nil); step = precommit
//! timeout_precommit(r), round = r: start_round(r + 1)
//! beacon(r) from proposer(r), round = r, step = propose: re-arm timeout_propose(r)
//! ```
//! Safety (no two proposals decided for one window) holds whatever the
//! timing, as long as the faulty weight is below `1 - num/den` of the total:
//! two quorums intersect in an honest member, an honest member precommits at
//! most one value per round, and once locked on v in round r it prevotes
//! only v in later rounds unless a quorum prevoted another value in a round
//! after r. Timeouts (the only clock) decide when to move on, never what is
//! valid, so a slow node only costs rounds.

use std::collections::{BTreeMap, BTreeSet};

use montana_vdf::Hash32;

use super::active::{ActiveSet, NodeId, Quorum};

/// Which of the two votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// A vote as the machine sees it (signature already checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteIn {
    pub kind: VoteKind,
    pub round: u32,
    /// The proposal hash, or `None` for nil.
    pub value: Option<Hash32>,
    pub signer: NodeId,
}

/// The step within a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
}

/// Which timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timeout {
    Propose,
    Prevote,
    Precommit,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// We propose in `round`: re-propose `value` (with its `valid_round`)
    /// when given, otherwise build a new proposal.
    Propose {
        round: u32,
        value: Option<(Hash32, u32)>,
    },
    /// Check the proposal with this hash and answer with
    /// [`Agreement::on_validated`].
    Validate { round: u32, value: Hash32 },
    /// Sign this vote (after recording it as the highest signed step) and
    /// send it to every peer.
    Vote {
        kind: VoteKind,
        round: u32,
        value: Option<Hash32>,
    },
    /// Arm `timer` for `round` (replacing an armed one of the same kind).
    Arm { timer: Timeout, round: u32 },
    /// A new round started (for status and logs).
    Round(u32),
    /// The window is decided: `value` with the precommits of `round` by
    /// `signers` (more than the quorum's weight).
    Decide {
        value: Hash32,
        round: u32,
        signers: Vec<NodeId>,
    },
}

/// Why a vote was not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteReject {
    /// Not a member of this window's active set.
    NotMember,
    /// The signer already voted differently in this (round, kind): an
    /// equivocation (kept as evidence by the caller).
    Conflicting { first: Option<Hash32> },
    /// The same vote again (a replay or a re-signed copy).
    Duplicate,
}

impl VoteReject {
    pub fn kind(&self) -> &'static str {
        match self {
            VoteReject::NotMember => "vote_non_member",
            VoteReject::Conflicting { .. } => "vote_conflicting",
            VoteReject::Duplicate => "vote_duplicate",
        }
    }
}

/// Votes of one kind in one round.
#[derive(Clone, Debug, Default)]
struct Tally {
    by_signer: BTreeMap<NodeId, Option<Hash32>>,
    weight_for: BTreeMap<Option<Hash32>, u64>,
    weight_any: u64,
}

impl Tally {
    fn add(
        &mut self,
        signer: NodeId,
        value: Option<Hash32>,
        weight: u64,
    ) -> Result<(), VoteReject> {
        if let Some(first) = self.by_signer.get(&signer) {
            return Err(if *first == value {
                VoteReject::Duplicate
            } else {
                VoteReject::Conflicting { first: *first }
            });
        }
        self.by_signer.insert(signer, value);
        *self.weight_for.entry(value).or_default() += weight;
        self.weight_any += weight;
        Ok(())
    }
    fn weight(&self, value: Option<Hash32>) -> u64 {
        self.weight_for.get(&value).copied().unwrap_or(0)
    }
    fn signers_for(&self, value: Option<Hash32>) -> Vec<NodeId> {
        self.by_signer
            .iter()
            .filter(|(_, v)| **v == value)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// A proposal header seen in some round.
#[derive(Clone, Copy, Debug)]
struct Seen {
    value: Hash32,
    valid_round: Option<u32>,
}

/// Validity of a proposal (by hash): asked once, answered once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validity {
    Pending,
    Valid,
    Invalid,
}

/// The agreement on one window. See the module docs.
#[derive(Debug)]
pub struct Agreement {
    set: ActiveSet,
    quorum: Quorum,
    /// Proposer of round r is `order[r % order.len()]`.
    order: Vec<NodeId>,
    me: Option<NodeId>,
    round: u32,
    step: Step,
    locked: Option<(Hash32, u32)>,
    valid: Option<(Hash32, u32)>,
    /// The proposal of each round from that round's proposer (first wins).
    proposals: BTreeMap<u32, Seen>,
    validity: BTreeMap<Hash32, Validity>,
    prevotes: BTreeMap<u32, Tally>,
    precommits: BTreeMap<u32, Tally>,
    /// Signers of any message per round (for the skip rule).
    heard: BTreeMap<u32, BTreeSet<NodeId>>,
    /// Rounds whose "first time" rules already fired.
    armed_prevote: BTreeSet<u32>,
    armed_precommit: BTreeSet<u32>,
    l36_done: BTreeSet<u32>,
    decided: Option<(Hash32, u32)>,
    started: bool,
}

/// Most rounds ahead of ours whose messages are kept (a peer cannot make us
/// store votes for round 2^32-1).
pub const MAX_ROUNDS_AHEAD: u32 = 64;

impl Agreement {
    /// `order` is the failover order ([`ActiveSet::failover_order`]); `me`
    /// is this node's id when it is a member (a non-member only watches).
    pub fn new(set: ActiveSet, quorum: Quorum, order: Vec<NodeId>, me: Option<NodeId>) -> Self {
        assert!(!order.is_empty(), "failover order of a non-empty set");
        Agreement {
            me: me.filter(|id| set.index_of(id).is_some()),
            set,
            quorum,
            order,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            proposals: BTreeMap::new(),
            validity: BTreeMap::new(),
            prevotes: BTreeMap::new(),
            precommits: BTreeMap::new(),
            heard: BTreeMap::new(),
            armed_prevote: BTreeSet::new(),
            armed_precommit: BTreeSet::new(),
            l36_done: BTreeSet::new(),
            decided: None,
            started: false,
        }
    }

    pub fn round(&self) -> u32 {
        self.round
    }
    pub fn step(&self) -> Step {
        self.step
    }
    pub fn decided(&self) -> Option<(Hash32, u32)> {
        self.decided
    }
    pub fn locked(&self) -> Option<(Hash32, u32)> {
        self.locked
    }
    /// The value a quorum prevoted in the latest round this node saw it
    /// happen (`valid_value`, `valid_round`), if any.
    pub fn valid(&self) -> Option<(Hash32, u32)> {
        self.valid
    }
    pub fn active_set(&self) -> &ActiveSet {
        &self.set
    }
    /// Whether the proposal with hash `v` was judged valid.
    pub fn is_valid_value(&self, v: &Hash32) -> bool {
        self.is_valid(v)
    }
    /// The proposer of `round`.
    pub fn proposer(&self, round: u32) -> NodeId {
        self.order[round as usize % self.order.len()]
    }

    /// Starts round 0.
    pub fn start(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.start_round(0, &mut out);
            self.evaluate(&mut out);
        }
        out
    }

    /// Starts at `round` instead of 0, locked on `locked`: a node that
    /// restarts in the middle of a window resumes after the last round it
    /// signed in, keeping its lock (it never signs that round again).
    pub fn start_at(&mut self, round: u32, locked: Option<(Hash32, u32)>) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.locked = locked;
            self.start_round(round, &mut out);
            self.evaluate(&mut out);
        }
        out
    }

    /// The header of a proposal for `round` with hash `value`, signed by
    /// `from` (signature checked by the caller). Proposals from anyone but
    /// the round's proposer, and a second proposal for a round, are ignored
    /// (returns `false`).
    pub fn on_proposal(
        &mut self,
        round: u32,
        value: Hash32,
        valid_round: Option<u32>,
        from: NodeId,
        out: &mut Vec<Output>,
    ) -> bool {
        if self.decided.is_some() && self.decided.map(|d| d.0) != Some(value) {
            return false;
        }
        if from != self.proposer(round)
            || round > self.round.saturating_add(MAX_ROUNDS_AHEAD)
            || valid_round.is_some_and(|vr| vr >= round)
            || self.proposals.contains_key(&round)
        {
            return false;
        }
        self.proposals.insert(round, Seen { value, valid_round });
        self.heard.entry(round).or_default().insert(from);
        if let std::collections::btree_map::Entry::Vacant(e) = self.validity.entry(value) {
            e.insert(Validity::Pending);
            out.push(Output::Validate { round, value });
        }
        self.evaluate(out);
        true
    }

    /// The caller no longer holds the proposal with hash `value` (it made
    /// room for others) before judging it: a pending verdict is forgotten,
    /// so that the value proposed again is asked for validation again
    /// (a judged value keeps its verdict).
    pub fn forget_pending(&mut self, value: &Hash32) {
        if self.validity.get(value) == Some(&Validity::Pending) {
            self.validity.remove(value);
        }
    }

    /// The caller's verdict on the proposal with hash `value`.
    pub fn on_validated(&mut self, value: Hash32, valid: bool, out: &mut Vec<Output>) {
        if let Some(v) = self.validity.get_mut(&value) {
            if *v == Validity::Pending {
                *v = if valid {
                    Validity::Valid
                } else {
                    Validity::Invalid
                };
                self.evaluate(out);
            }
        }
    }

    /// A checked vote. Counted once per signer, round and kind.
    pub fn on_vote(&mut self, vote: VoteIn, out: &mut Vec<Output>) -> Result<(), VoteReject> {
        let weight = self.set.weight(&vote.signer);
        if weight == 0 {
            return Err(VoteReject::NotMember);
        }
        if vote.round > self.round.saturating_add(MAX_ROUNDS_AHEAD) {
            // Too far ahead to hold; the signer will send it again.
            return Ok(());
        }
        let tally = match vote.kind {
            VoteKind::Prevote => self.prevotes.entry(vote.round).or_default(),
            VoteKind::Precommit => self.precommits.entry(vote.round).or_default(),
        };
        tally.add(vote.signer, vote.value, weight)?;
        self.heard
            .entry(vote.round)
            .or_default()
            .insert(vote.signer);
        self.evaluate(out);
        Ok(())
    }

    /// A timer armed by [`Output::Arm`] fired.
    pub fn on_timeout(&mut self, timer: Timeout, round: u32, out: &mut Vec<Output>) {
        if self.decided.is_some() || round != self.round {
            return;
        }
        match timer {
            Timeout::Propose if self.step == Step::Propose => {
                self.vote(VoteKind::Prevote, None, out);
                self.step = Step::Prevote;
            }
            Timeout::Prevote if self.step == Step::Prevote => {
                self.vote(VoteKind::Precommit, None, out);
                self.step = Step::Precommit;
            }
            Timeout::Precommit => self.start_round(round + 1, out),
            _ => return,
        }
        self.evaluate(out);
    }

    /// A progress beacon from `from` for `round`: the proposer is still
    /// evaluating, so its propose timeout starts again.
    pub fn on_beacon(&mut self, round: u32, from: NodeId, out: &mut Vec<Output>) {
        if self.decided.is_none()
            && round == self.round
            && self.step == Step::Propose
            && from == self.proposer(round)
        {
            out.push(Output::Arm {
                timer: Timeout::Propose,
                round,
            });
        }
    }

    fn start_round(&mut self, round: u32, out: &mut Vec<Output>) {
        self.round = round;
        self.step = Step::Propose;
        out.push(Output::Round(round));
        // Drop what is now too far behind to matter: nothing; earlier rounds'
        // precommits can still decide (L49), and rounds are bounded ahead.
        if Some(self.proposer(round)) == self.me {
            out.push(Output::Propose {
                round,
                value: self.valid,
            });
        } else {
            out.push(Output::Arm {
                timer: Timeout::Propose,
                round,
            });
        }
    }

    fn vote(&mut self, kind: VoteKind, value: Option<Hash32>, out: &mut Vec<Output>) {
        if self.me.is_some() {
            out.push(Output::Vote {
                kind,
                round: self.round,
                value,
            });
        }
    }

    fn is_valid(&self, v: &Hash32) -> bool {
        self.validity.get(v) == Some(&Validity::Valid)
    }
    fn is_judged(&self, v: &Hash32) -> bool {
        matches!(
            self.validity.get(v),
            Some(Validity::Valid | Validity::Invalid)
        )
    }
    fn prevote_weight(&self, round: u32, value: Option<Hash32>) -> u64 {
        self.prevotes.get(&round).map_or(0, |t| t.weight(value))
    }

    /// Applies every rule that is enabled, until none is.
    fn evaluate(&mut self, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        loop {
            if self.decided.is_some() || !self.apply_one(out) {
                return;
            }
        }
    }

    /// Applies the first enabled rule; `false` when none is.
    fn apply_one(&mut self, out: &mut Vec<Output>) -> bool {
        let total = self.set.total();
        let q = self.quorum;
        let r = self.round;

        // L49: a quorum of precommits for a known, valid proposal, any round.
        let decide = self.precommits.iter().find_map(|(round, t)| {
            t.weight_for.iter().find_map(|(v, w)| match v {
                Some(v) if q.reached(*w, total) && self.is_valid(v) => {
                    let seen = self.proposals.values().any(|s| s.value == *v);
                    seen.then_some((*v, *round))
                }
                _ => None,
            })
        });
        if let Some((value, round)) = decide {
            let signers = self.precommits[&round].signers_for(Some(value));
            self.decided = Some((value, round));
            out.push(Output::Decide {
                value,
                round,
                signers,
            });
            return false;
        }

        // L55: skip to a later round that enough weight has reached.
        let skip_to = self
            .heard
            .range(r + 1..)
            .filter(|(_, who)| {
                let w: u64 = who.iter().map(|id| self.set.weight(id)).sum();
                q.skip(w, total)
            })
            .map(|(round, _)| *round)
            .next_back();
        if let Some(round) = skip_to {
            self.start_round(round, out);
            return true;
        }

        let proposal = self.proposals.get(&r).copied();

        if self.step == Step::Propose {
            if let Some(Seen { value, valid_round }) = proposal {
                if !self.is_judged(&value) {
                    // Wait for the verdict (L22/L28 need valid(v)).
                } else {
                    match valid_round {
                        None => {
                            // L22
                            let ok = self.is_valid(&value)
                                && self.locked.is_none_or(|(lv, _)| lv == value);
                            self.vote(VoteKind::Prevote, ok.then_some(value), out);
                            self.step = Step::Prevote;
                            return true;
                        }
                        Some(vr) if q.reached(self.prevote_weight(vr, Some(value)), total) => {
                            // L28
                            let ok = self.is_valid(&value)
                                && self.locked.is_none_or(|(lv, lr)| lr <= vr || lv == value);
                            self.vote(VoteKind::Prevote, ok.then_some(value), out);
                            self.step = Step::Prevote;
                            return true;
                        }
                        Some(_) => {}
                    }
                }
            }
        }

        let prevotes_any = self.prevotes.get(&r).map_or(0, |t| t.weight_any);
        // L34
        if self.step == Step::Prevote
            && q.reached(prevotes_any, total)
            && self.armed_prevote.insert(r)
        {
            out.push(Output::Arm {
                timer: Timeout::Prevote,
                round: r,
            });
            return true;
        }

        // L36
        if let Some(Seen { value, .. }) = proposal {
            if self.step >= Step::Prevote
                && self.is_valid(&value)
                && q.reached(self.prevote_weight(r, Some(value)), total)
                && self.l36_done.insert(r)
            {
                if self.step == Step::Prevote {
                    self.locked = Some((value, r));
                    self.vote(VoteKind::Precommit, Some(value), out);
                    self.step = Step::Precommit;
                }
                self.valid = Some((value, r));
                return true;
            }
        }

        // L44
        if self.step == Step::Prevote && q.reached(self.prevote_weight(r, None), total) {
            self.vote(VoteKind::Precommit, None, out);
            self.step = Step::Precommit;
            return true;
        }

        // L47
        let precommits_any = self.precommits.get(&r).map_or(0, |t| t.weight_any);
        if q.reached(precommits_any, total) && self.armed_precommit.insert(r) {
            out.push(Output::Arm {
                timer: Timeout::Precommit,
                round: r,
            });
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests;
