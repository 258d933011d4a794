//! The window state machine, without I/O.
//!
//! It takes events (a proposal or a batch of them from a peer, a peer's tip,
//! the result of a verification or an evaluation, a timer tick) and returns
//! [`Action`]s for the node to carry out (verify a batch on the verify
//! backend, evaluate the next window, store and broadcast, request missing
//! windows). Nothing here touches the network, the disk or a backend, so
//! every rule is unit-tested with plain values.
//!
//! Rules:
//! - The proposer (the genesis bootstrap peer) evaluates T(W+1) from its tip
//!   and applies its own proposal; nobody else may propose. Before its first
//!   proposal of a run, a proposer whose tip is below what a trusted peer
//!   claims (it lost its data) catches up from its peers like a follower, so
//!   it never re-evaluates windows the network already has.
//! - A follower checks proposer, signature, window and link (the previous
//!   proposal's hash, the network id for window 1) before spending any
//!   hashing, then verifies the checkpoints, then applies. It never advances
//!   on its own: the only way forward is a verified proposal.
//! - Behind: ask a peer for the missing windows and verify whatever
//!   consecutive run is at hand in one backend call (many windows per call).
//! - Invalid proposals are rejected with a reason and counted; the machine
//!   keeps going.
//! - Admission runs the cheap checks (proposer, parameters, window,
//!   duplicate) before the ML-DSA signature check, so replays and junk cost
//!   no signature verification.
//! - A peer's Tip is a claim, not a fact: each peer's latest claim is kept
//!   apart, requests go to the peer claiming the most, and a peer whose
//!   request times out or comes back without anything new is demoted (its
//!   claim dropped, its Tips ignored for a back-off that doubles per strike,
//!   from [`REQUEST_TIMEOUT`] up to [`MAX_DEMOTION`]); the next request goes
//!   to another peer. A peer that claims window 2^64-1 and serves nothing
//!   cannot stop catch-up or spin a request loop.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use montana_vdf::{Hash32, HashSuite, Proof, VerifyOutcome};

use crate::genesis::Genesis;
use crate::keys::{VerifyingKey, SIGNATURE_LEN};
use crate::messages::MAX_REQUEST;
use crate::proposal::Proposal;
use crate::storage::Tip;

/// A peer, by its index in the genesis peer list.
pub type PeerIndex = u16;

/// Most windows verified in one backend call.
pub const MAX_BATCH_WINDOWS: usize = 64;
/// Most bytes held in proposals waiting for their turn (header, signature
/// and checkpoints counted: many small proposals weigh what they weigh).
pub const MAX_WAITING_BYTES: usize = 32 << 20;
/// Proposals further than this above the tip are not held (fetched later);
/// dropped before their signature is checked.
pub const WAITING_HORIZON: u64 = 4096;
/// How long a GetProposals may stay unanswered before the peer is demoted
/// and another is asked.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest demotion of a peer that did not serve what it claimed.
pub const MAX_DEMOTION: Duration = Duration::from_secs(120);
/// Candidates kept per window (a forged one must not push out a real one).
const CANDIDATES_PER_WINDOW: usize = 4;

/// Why a proposal was rejected. `kind()` names the counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    WrongProposer { claimed: PeerIndex },
    NotFromProposer,
    BadSignature,
    WrongParams(String),
    WrongWindow { expected: u64, got: u64 },
    WrongPrevious,
    BadCheckpoint { segment: usize },
}

impl Reject {
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::WrongProposer { .. } => "wrong_proposer",
            Reject::NotFromProposer => "not_from_proposer",
            Reject::BadSignature => "bad_signature",
            Reject::WrongParams(_) => "wrong_params",
            Reject::WrongWindow { .. } => "wrong_window",
            Reject::WrongPrevious => "wrong_previous",
            Reject::BadCheckpoint { .. } => "bad_checkpoint",
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::WrongProposer { claimed } => {
                write!(f, "wrong proposer: claims peer {claimed}")
            }
            Reject::NotFromProposer => f.write_str("the proposer received a proposal"),
            Reject::BadSignature => f.write_str("bad signature"),
            Reject::WrongParams(why) => write!(f, "wrong parameters: {why}"),
            Reject::WrongWindow { expected, got } => {
                write!(f, "wrong window: expected {expected}, got {got}")
            }
            Reject::WrongPrevious => f.write_str("wrong previous proposal hash"),
            Reject::BadCheckpoint { segment } => {
                write!(f, "bad checkpoint: segment {segment} does not verify")
            }
        }
    }
}

/// Consecutive proposals to verify together, with their proofs.
#[derive(Clone, Debug)]
pub struct Batch {
    pub from: Option<PeerIndex>,
    pub proposals: Vec<Proposal>,
    pub proofs: Vec<Proof>,
}

/// What the node must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Verify `batch` (one `verify_proofs` call), then call
    /// [`Chain::on_verified`].
    Verify(Batch),
    /// Evaluate window `window` from `start` (= T(window-1)) with K
    /// checkpoints, sign it with `link`, then call [`Chain::on_evaluated`].
    Evaluate {
        window: u64,
        start: Hash32,
        link: [u8; 32],
    },
    /// Persist these verified proposals (one atomic batch); the tip has moved.
    Apply(Vec<Proposal>),
    /// Send this new proposal to every peer.
    Broadcast(Proposal),
    /// Ask `peer` for windows `from..from+count`.
    Request {
        peer: PeerIndex,
        from: u64,
        count: u32,
    },
    /// Log this rejection (already counted).
    Rejected {
        peer: Option<PeerIndex>,
        window: u64,
        reason: Reject,
    },
}

/// The fixed rules from the genesis.
#[derive(Clone, Debug)]
pub struct Rules {
    pub suite: HashSuite,
    pub d: u64,
    pub checkpoints: u32,
    pub proposer: PeerIndex,
    pub proposer_key: VerifyingKey,
}

impl Rules {
    pub fn from_genesis(g: &Genesis) -> Self {
        let proposer = g.proposer();
        Rules {
            suite: g.hash,
            d: g.d,
            checkpoints: g.checkpoints as u32,
            proposer,
            proposer_key: g.peers[proposer as usize]
                .signing_public()
                .expect("validated genesis"),
        }
    }
}

/// What one peer claims to have, and how far we trust the claim.
#[derive(Clone, Copy, Debug, Default)]
struct Claim {
    /// The peer's latest Tip, raised by the proposals it sends us.
    window: u64,
    /// Failed requests since it last delivered something new.
    strikes: u32,
    /// While set, its claim does not count and its Tips are ignored.
    demoted_until: Option<Instant>,
}

/// Encoded size of a proposal, as the waiting room counts it.
fn weight(p: &Proposal) -> usize {
    crate::proposal::HEADER_LEN + SIGNATURE_LEN + 32 * p.checkpoints.len()
}

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Chain {
    rules: Rules,
    me: PeerIndex,
    tip: Tip,
    /// Each peer's claim (unverified Tips, raised by signed proposals).
    claims: HashMap<PeerIndex, Claim>,
    /// Checked-so-far proposals above the tip, by window.
    waiting: BTreeMap<u64, Vec<(Option<PeerIndex>, Proposal)>>,
    waiting_bytes: usize,
    waiting_budget: usize,
    /// ML-DSA signature checks done by admission (cheap checks come first).
    signature_checks: u64,
    /// A verification (follower) or evaluation (proposer) is running.
    busy: bool,
    /// The last window of the batch being verified (0 when none).
    verifying_upto: u64,
    /// Hashes of the proposals being verified (replays are not re-checked).
    verifying: Vec<[u8; 32]>,
    /// (peer, from, when) of the outstanding GetProposals.
    requested: Option<(PeerIndex, u64, Instant)>,
    rejected: BTreeMap<&'static str, u64>,
    stopped: bool,
    /// The proposer proposes only after [`Chain::start`].
    started: bool,
    /// The proposer has asked for an evaluation in this run (from then on
    /// it takes no proposals from peers).
    proposed: bool,
    /// The proposer proposes no window past this one (devnets, tests).
    last_window: Option<u64>,
}

impl Chain {
    pub fn new(rules: Rules, me: PeerIndex, tip: Tip) -> Self {
        Chain {
            rules,
            me,
            claims: HashMap::new(),
            tip,
            waiting: BTreeMap::new(),
            waiting_bytes: 0,
            waiting_budget: MAX_WAITING_BYTES,
            signature_checks: 0,
            busy: false,
            verifying_upto: 0,
            verifying: Vec::new(),
            requested: None,
            rejected: BTreeMap::new(),
            stopped: false,
            started: false,
            proposed: false,
            last_window: None,
        }
    }

    /// Bounds the bytes held in the waiting room (default
    /// [`MAX_WAITING_BYTES`]).
    pub fn set_waiting_budget(&mut self, bytes: usize) {
        self.waiting_budget = bytes;
    }

    /// Bytes of proposals held in the waiting room.
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// ML-DSA proposal signatures checked so far.
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks
    }

    /// Makes the proposer stop proposing after `window` (it keeps serving).
    pub fn set_last_window(&mut self, window: Option<u64>) {
        self.last_window = window;
    }

    fn reached_last_window(&self) -> bool {
        self.last_window.is_some_and(|l| self.tip.window >= l)
    }

    pub fn is_proposer(&self) -> bool {
        self.me == self.rules.proposer
    }

    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Windows between the tip and the best one a trusted peer claims.
    pub fn lag(&self) -> u64 {
        self.best_known().saturating_sub(self.tip.window)
    }

    /// The highest window claimed by a peer that is not demoted (at least
    /// the tip).
    pub fn best_known(&self) -> u64 {
        self.claims
            .values()
            .filter(|c| c.demoted_until.is_none())
            .map(|c| c.window)
            .fold(self.tip.window, u64::max)
    }

    /// Peers that have told us their tip (or sent a proposal).
    pub fn heard_from(&self) -> usize {
        self.claims.len()
    }

    /// A proposer that has not proposed yet in this run and whose tip is
    /// below what a trusted peer claims (it lost its data): it catches up
    /// like a follower before it proposes.
    fn proposer_catching_up(&self) -> bool {
        self.is_proposer() && !self.proposed && self.best_known() > self.tip.window
    }

    /// Whether `peer` is demoted for not serving what it claimed.
    pub fn is_demoted(&self, peer: PeerIndex) -> bool {
        self.claims
            .get(&peer)
            .is_some_and(|c| c.demoted_until.is_some())
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// "proposing", "done" (the proposer past its last window),
    /// "verifying", "catching-up", "following" or "stopped".
    pub fn phase(&self) -> &'static str {
        if self.stopped {
            "stopped"
        } else if self.is_proposer() && self.reached_last_window() {
            "done"
        } else if self.is_proposer() && !self.proposer_catching_up() {
            "proposing"
        } else if self.lag() > 1 {
            "catching-up"
        } else if self.busy {
            "verifying"
        } else {
            "following"
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// No new work after this (shutdown); in-flight results are still taken.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Lets the proposer begin (the node calls it once its peers are
    /// connected); returns the first actions.
    pub fn start(&mut self) -> Vec<Action> {
        self.started = true;
        self.next_work(Instant::now())
    }

    /// A proposal pushed by `peer`.
    pub fn on_proposal(&mut self, peer: PeerIndex, p: Proposal, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.admit(Some(peer), p, &mut out);
        out.extend(self.next_work(now));
        out
    }

    /// Proposals answering our GetProposals.
    pub fn on_proposals(
        &mut self,
        peer: PeerIndex,
        ps: Vec<Proposal>,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let answering = matches!(self.requested, Some((p, _, _)) if p == peer);
        let mut new = 0;
        for p in ps {
            new += self.admit(Some(peer), p, &mut out) as usize;
        }
        if answering {
            self.requested = None;
            if new == 0 {
                // Asked for windows it claims, answered nothing new.
                self.demote(peer, now);
            } else {
                self.claims.entry(peer).or_default().strikes = 0;
            }
        }
        out.extend(self.next_work(now));
        out
    }

    /// A peer's tip: how far the network is.
    /// A demoted peer's Tips are ignored until its demotion ends.
    pub fn on_tip(&mut self, peer: PeerIndex, window: u64, now: Instant) -> Vec<Action> {
        let c = self.claims.entry(peer).or_default();
        match c.demoted_until {
            Some(until) if now < until => {}
            _ => {
                c.demoted_until = None;
                c.window = window;
            }
        }
        self.next_work(now)
    }

    /// Periodic: demotes the peer of a request unanswered for
    /// [`REQUEST_TIMEOUT`] and asks another.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if let Some((peer, _, at)) = self.requested {
            if now.saturating_duration_since(at) >= REQUEST_TIMEOUT {
                self.requested = None;
                self.demote(peer, now);
            }
        }
        self.next_work(now)
    }

    /// The result of an [`Action::Verify`]; `Err` is a backend failure (the
    /// batch goes back to wait for a retry, nobody is blamed).
    pub fn on_verified(
        &mut self,
        batch: Batch,
        outcome: Result<VerifyOutcome, String>,
        now: Instant,
    ) -> Vec<Action> {
        self.busy = false;
        self.verifying_upto = 0;
        self.verifying.clear();
        let mut out = Vec::new();
        let k = self.rules.checkpoints as usize;
        let good = match outcome {
            Ok(VerifyOutcome::Valid) => batch.proposals.len(),
            Ok(VerifyOutcome::Invalid { first_bad_segment }) => {
                let bad = first_bad_segment / k;
                let p = &batch.proposals[bad];
                self.reject(
                    batch.from,
                    p.window(),
                    Reject::BadCheckpoint {
                        segment: first_bad_segment % k,
                    },
                    &mut out,
                );
                bad
            }
            Err(_) => {
                for p in batch.proposals {
                    self.wait(batch.from, p);
                }
                return out;
            }
        };
        let applied: Vec<Proposal> = batch.proposals.into_iter().take(good).collect();
        if !applied.is_empty() {
            for p in &applied {
                self.tip = self.tip.after(p);
            }
            self.prune();
            out.push(Action::Apply(applied));
        }
        out.extend(self.next_work(now));
        out
    }

    /// The proposer's own signed proposal for the window it was asked to
    /// evaluate: apply and broadcast it.
    pub fn on_evaluated(&mut self, p: Proposal, now: Instant) -> Vec<Action> {
        self.busy = false;
        let mut out = Vec::new();
        if p.window() == self.tip.window + 1 && p.header.link == self.tip.hash {
            self.tip = self.tip.after(&p);
            out.push(Action::Apply(vec![p.clone()]));
            out.push(Action::Broadcast(p));
        }
        out.extend(self.next_work(now));
        out
    }

    /// An evaluation that did not finish (cancelled or failed).
    pub fn on_evaluation_failed(&mut self) {
        self.busy = false;
    }

    /// `peer` sent a proposer-signed proposal for `window`: it has it
    /// (a demoted peer stays demoted until its back-off ends).
    fn saw(&mut self, peer: PeerIndex, window: u64) {
        let c = self.claims.entry(peer).or_default();
        if c.demoted_until.is_none() {
            c.window = c.window.max(window);
        }
    }

    /// Drops `peer`'s claim and ignores its Tips for a while (doubling with
    /// each strike).
    fn demote(&mut self, peer: PeerIndex, now: Instant) {
        let c = self.claims.entry(peer).or_default();
        c.strikes = c.strikes.saturating_add(1);
        let backoff = REQUEST_TIMEOUT
            .saturating_mul(1 << (c.strikes - 1).min(16))
            .min(MAX_DEMOTION);
        c.window = 0;
        c.demoted_until = Some(now + backoff);
    }

    /// The peer to ask for windows from `from`: the trusted one claiming the
    /// most (lowest index on a tie).
    fn pick_peer(&self, from: u64) -> Option<(PeerIndex, u64)> {
        self.claims
            .iter()
            .filter(|(_, c)| c.demoted_until.is_none() && c.window >= from)
            .map(|(p, c)| (*p, c.window))
            .max_by_key(|&(p, w)| (w, std::cmp::Reverse(p)))
    }

    fn reject(&mut self, peer: Option<PeerIndex>, window: u64, r: Reject, out: &mut Vec<Action>) {
        *self.rejected.entry(r.kind()).or_default() += 1;
        out.push(Action::Rejected {
            peer,
            window,
            reason: r,
        });
    }

    /// The checks that need no hashing, cheapest first (the ML-DSA
    /// signature last), then into the waiting room. Returns whether the
    /// proposal was new (held for verification).
    fn admit(&mut self, peer: Option<PeerIndex>, p: Proposal, out: &mut Vec<Action>) -> bool {
        let w = p.window();
        let h = &p.header;
        let r = &self.rules;
        let verdict = if self.is_proposer() && self.proposed {
            Err(Reject::NotFromProposer)
        } else if h.proposer != r.proposer {
            Err(Reject::WrongProposer {
                claimed: h.proposer,
            })
        } else if h.suite != r.suite || h.d != r.d || h.checkpoints != r.checkpoints {
            Err(Reject::WrongParams(format!(
                "{}/D={}/K={}",
                h.suite, h.d, h.checkpoints
            )))
        } else if w == self.tip.window && p.hash() != self.tip.hash {
            // A different proposal for the window just applied: wrong
            // whoever signed it, so no signature check is spent on it.
            Err(Reject::WrongWindow {
                expected: self.tip.window + 1,
                got: w,
            })
        } else {
            Ok(())
        };
        if let Err(reason) = verdict {
            self.reject(peer, w, reason, out);
            return false;
        }
        if w <= self.tip.window || w > self.tip.window.saturating_add(WAITING_HORIZON) {
            // Already applied (catch-up and push overlap), or too far ahead
            // to hold (fetched when its turn comes).
            return false;
        }
        let hash = p.hash();
        if self.verifying.contains(&hash)
            || self
                .waiting
                .get(&w)
                .is_some_and(|slot| slot.iter().any(|(_, q)| q.hash() == hash))
        {
            return false; // already being verified, or waiting
        }
        self.signature_checks += 1;
        if !p.signed_by(&self.rules.proposer_key) {
            self.reject(peer, w, Reject::BadSignature, out);
            return false;
        }
        // Signed by the proposer: the window exists, and the peer has it.
        if let Some(peer) = peer {
            self.saw(peer, w);
        }
        self.wait(peer, p)
    }

    /// Holds `p` until its turn; false if it was not kept (the room is
    /// full in bytes, or the window has enough candidates).
    fn wait(&mut self, peer: Option<PeerIndex>, p: Proposal) -> bool {
        let size = weight(&p);
        // Full: make room by dropping the highest windows held, but only for
        // a lower one (the next window must always fit, or nothing moves).
        while self.waiting_bytes + size > self.waiting_budget {
            match self.waiting.last_key_value() {
                Some((&top, _)) if top > p.window() => {
                    for (_, q) in self.waiting.remove(&top).unwrap_or_default() {
                        self.waiting_bytes -= weight(&q);
                    }
                }
                _ => return false, // fetched again later
            }
        }
        let slot = self.waiting.entry(p.window()).or_default();
        let h = p.hash();
        if slot.len() >= CANDIDATES_PER_WINDOW || slot.iter().any(|(_, q)| q.hash() == h) {
            return false;
        }
        slot.push((peer, p));
        self.waiting_bytes += size;
        true
    }

    /// Drops waiting proposals at or below the tip.
    fn prune(&mut self) {
        let keep = self.waiting.split_off(&(self.tip.window + 1));
        for (_, v) in std::mem::replace(&mut self.waiting, keep) {
            for (_, p) in v {
                self.waiting_bytes -= weight(&p);
            }
        }
    }

    /// Takes the next consecutive run of waiting proposals that links onto
    /// the tip, rejecting candidates whose link is wrong.
    fn take_batch(&mut self, out: &mut Vec<Action>) -> Option<Batch> {
        let mut link = self.tip.hash;
        let mut start = self.tip.t;
        let mut batch = Batch {
            from: None,
            proposals: Vec::new(),
            proofs: Vec::new(),
        };
        let mut w = self.tip.window + 1;
        let mut unlinked = Vec::new();
        while batch.proposals.len() < MAX_BATCH_WINDOWS {
            let Some(slot) = self.waiting.get_mut(&w) else {
                break;
            };
            // The first candidate that links on; the others that do not link
            // are rejected (they cannot become valid).
            let mut chosen = None;
            let mut i = 0;
            while i < slot.len() {
                if slot[i].1.header.link == link {
                    if chosen.is_none() {
                        chosen = Some(slot.remove(i));
                        continue;
                    }
                    i += 1;
                } else if batch.proposals.is_empty() {
                    // Linking onto the tip is final: a mismatch is wrong.
                    unlinked.push(slot.remove(i));
                } else {
                    i += 1;
                }
            }
            if slot.is_empty() {
                self.waiting.remove(&w);
            }
            for (peer, p) in unlinked.drain(..) {
                self.waiting_bytes -= weight(&p);
                self.reject(peer, p.window(), Reject::WrongPrevious, out);
            }
            let Some((peer, p)) = chosen else {
                break;
            };
            self.waiting_bytes -= weight(&p);
            if batch.from.is_none() {
                batch.from = peer;
            }
            batch.proofs.push(p.proof(start));
            link = p.hash();
            start = p.header.t;
            batch.proposals.push(p);
            w += 1;
        }
        (!batch.proposals.is_empty()).then_some(batch)
    }

    fn next_work(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stopped || self.busy {
            return out;
        }
        if self.is_proposer() && !self.proposer_catching_up() {
            if !self.started || self.reached_last_window() {
                return out;
            }
            self.busy = true;
            self.proposed = true;
            out.push(Action::Evaluate {
                window: self.tip.window + 1,
                start: self.tip.t,
                link: self.tip.hash,
            });
            return out;
        }
        if let Some(batch) = self.take_batch(&mut out) {
            self.busy = true;
            self.verifying_upto = batch.proposals.last().map_or(0, |p| p.window());
            self.verifying = batch.proposals.iter().map(Proposal::hash).collect();
            out.push(Action::Verify(batch));
        }
        // Ask for what is missing beyond what we hold (waiting or being
        // verified), one request at a time.
        let mut have = self.tip.window.max(self.verifying_upto);
        while self.waiting.contains_key(&(have + 1)) {
            have += 1;
        }
        let from = have + 1;
        if self.requested.is_none() {
            if let Some((peer, claimed)) = self.pick_peer(from) {
                let count = (claimed - from + 1).min(MAX_REQUEST as u64) as u32;
                self.requested = Some((peer, from, now));
                out.push(Action::Request { peer, from, count });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
