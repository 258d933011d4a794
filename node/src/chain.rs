//! The window state machine, without I/O.
//!
//! It takes events (a message from a peer, the result of a verification or
//! an evaluation, a timer) and returns [`Action`]s for the node to carry
//! out (verify on the verify backend, evaluate, persist, send, arm a
//! timer). Nothing here touches the network, the disk or a backend, so
//! every rule is tested with plain values (`chain/tests.rs` runs whole
//! networks of these machines in memory).
//!
//! Windows are decided by a quorum of the active set (docs/SPEC.md section
//! 9): at height `h` = cemented + 1 a [`consensus::agreement::Agreement`]
//! runs rounds; the round's proposer puts a proposal into it (a Propose),
//! members prevote and precommit, and a quorum of precommits for a valid
//! proposal cements it. Rules:
//! - `valid(v)`: the proposal links onto the cemented tip, names the
//!   cemented window before it, its bundle is a verified Cement of that
//!   window, its state root is the state after paying that window with that
//!   bundle, its maker is a member who signed it, and its K segments verify
//!   (T is the same whoever evaluates it, so one verification serves every
//!   proposal with the same checkpoints).
//! - A window is *applied* when a valid proposal for it is verified (T
//!   known) and *cemented* when decided; cementing pays the window before
//!   it (its canonical bundle is the one the decided proposal names) and
//!   is never rolled back.
//! - Round r of height h is proposed by failover rank r: rank 0 is the
//!   maker of window h-1's proposal (but every `tenure`-th window, which
//!   hands rank 0 over to the first by hash), then the order of section
//!   9.1. A proposer without T(h) evaluates it, sending a Beacon every half
//!   window so that the others' propose timer starts again; the maker of a
//!   proposal starts evaluating the next window at once (it is rank 0
//!   there); before a handover the first two by hash do, once T(h-1) is
//!   known (evaluated or verified).
//! - Before signing anything (a Propose or a vote) the machine emits
//!   [`Action::Persist`] with the highest (window, round, step) it signs
//!   and its lock; the node writes it, synced, before sending. After a
//!   restart it resumes after that round, with that lock, and never signs
//!   at or below it.
//! - Behind (a peer claims a higher cemented window): ask a peer for the
//!   cemented proposals and their Cements and verify whatever consecutive
//!   run is at hand in one backend call (many windows per call); each
//!   window needs a Cement of a quorum for exactly that proposal, and its
//!   state root is recomputed (the window before paid with the bundle it
//!   names). What waits is held a few per window, and what a peer sends
//!   unasked cannot crowd out what the chain needs: a proposal a held
//!   Cement names, or one that links onto what is held, displaces junk; a
//!   Cement the next proposal names displaces one nothing names. A
//!   proposal whose known maker's signature fails ends its message, and
//!   one sent unasked demotes its sender, whose unasked proposals go
//!   unread while it is demoted: a source buys one failed signature check
//!   per demotion.
//! - A peer's Tip is a claim, not a fact: each peer's latest claim is kept
//!   apart, requests go to the peer claiming the most, and a peer whose
//!   request times out or whose answer does not make the run of linked
//!   proposals longer is demoted (its
//!   claim dropped, its Tips ignored for a back-off that doubles per strike,
//!   from [`REQUEST_TIMEOUT`] up to [`MAX_DEMOTION`]). Members' claims
//!   (genesis peers' and the active set's, [`Chain::on_claim`]) come
//!   first: a guest is asked only when no member claims the windows
//!   wanted, and while any member's claim stands the lag (so `phase` and
//!   `membership`) counts members' claims only. Anyone can mint a guest's
//!   key, so a guest lying about a high tip, demoted, could come back
//!   under a new key in another slot and be asked again before the member
//!   holding the windows, [`REQUEST_TIMEOUT`] each time, and hold a
//!   candidate in `syncing`. Guests are still asked for what no member
//!   claims (a member behind, restored from an old backup, or gone
//!   without a word must not stop a node whose other peers are guests).
//!   Among peers of a class, a slow one (its last useful answer brought
//!   windows at under [`SLOW_RATE`] a second or under [`SLOW_SHARE`] of
//!   the best rate seen in that class) comes after the others that claim
//!   the windows wanted.
//! - Every check that needs no hashing runs before any signature check;
//!   every rejection is counted by reason and the machine keeps going.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use montana_vdf::{Hash32, HashSuite, Proof, VerifyOutcome};

use crate::consensus::active::{hands_over, ActiveSet, NodeId, Quorum};
use crate::consensus::agreement::{Agreement, Output, Timeout, VoteIn, VoteKind, MAX_ROUNDS_AHEAD};
use crate::consensus::joining::{
    carry, first_by_draw, CandidateProof, Extras, JoinRules, Registration,
};
use crate::consensus::propose::{Beacon, Propose, ProposeKey};
use crate::consensus::state::{Changes, Emission, Roster, Settle, State};
use crate::consensus::vote::{Cement, Vote, VoteKey};
use crate::genesis::Genesis;
use crate::keys::{NodeKeys, SIGNATURE_LEN};
use crate::messages::{Message, MAX_REQUEST};
use crate::proposal::{Basis, Proposal};
use crate::snapshot::certificate::Certificate;
use crate::storage::Tip;

/// A connected peer (the transport's numbering).
pub type PeerIndex = u16;

/// Most windows verified in one backend call.
pub const MAX_BATCH_WINDOWS: usize = 64;
/// Most proposal bytes (checkpoints) verified in one backend call on a CPU
/// backend, and fetched ahead of the verifier while it runs: a run of
/// windows is verified while the next is fetched, and a follower catching
/// up holds about three of these (the batch, its proofs, the next one)
/// instead of every window it could fetch. K = 6,500 (208 kB a window):
/// 20 windows a call, far more segments than one core needs to stay busy.
/// See [`Chain::set_batch_bytes`] (a GPU backend wants whole batches).
pub const BATCH_BYTES: usize = 4 << 20;
/// Requests a follower sends per second while catching up, and in one
/// burst: below what every peer grants it (`node::serve`, 10 a second in
/// bursts of 20), so an honest server never drops one, which would cost
/// [`REQUEST_TIMEOUT`] and a demotion of the only peer that had the windows.
pub const REQUEST_PACE: f64 = crate::node::serve::REQUESTS_PER_SEC * 0.8;
pub const REQUEST_PACE_BURST: f64 = crate::node::serve::REQUEST_BURST * 0.5;
/// Answer bytes per second (and in one burst) a follower lets itself be
/// sent, for the same reason: below `node::serve`'s 4 MiB/s in bursts of
/// 16 MiB. Answers are counted as they arrive; no request goes out while
/// the count is in debt.
pub const BYTES_PACE: f64 = crate::node::serve::BYTES_PER_SEC * 0.8;
pub const BYTES_PACE_BURST: f64 = crate::node::serve::BYTES_BURST * 0.5;
/// Most bytes held in proposals waiting for their turn.
pub const MAX_WAITING_BYTES: usize = 32 << 20;
/// Most bytes held in Cements above the tip (a guest could otherwise send
/// real Cements, four per window, for every window to the horizon: 0.6 GB
/// with 16 members, gigabytes with hundreds). The nearest windows are
/// kept; the next window's always fits.
pub const MAX_CEMENT_BYTES: usize = 32 << 20;
/// Proposals further than this above the tip are not held.
pub const WAITING_HORIZON: u64 = 4096;
/// How long a GetProposals may stay unanswered before the peer is demoted.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest demotion of a peer that did not serve what it claimed.
pub const MAX_DEMOTION: Duration = Duration::from_secs(120);
/// A peer whose last useful catch-up answer brought windows at under this
/// share of the best rate any peer's did, or under [`SLOW_RATE`], is
/// asked only when no other peer claims the windows wanted: a Byzantine
/// member claiming the most and answering each request with one window
/// just before [`REQUEST_TIMEOUT`] was never demoted and held catch-up to
/// a window per 5 s.
pub const SLOW_SHARE: f64 = 0.25;
/// Windows per second under which a catch-up answer is slow whatever the
/// others' (an honest answer of one window, the tail, counts
/// [`REQUEST_PACE`] windows a second: see `answer_rate`).
pub const SLOW_RATE: f64 = 2.0;
/// A node one window behind a peer's claim waits this long for the live
/// agreement before it fetches the window instead.
pub const CATCH_UP_DELAY: Duration = Duration::from_secs(2);
/// Proposer timeouts a round's proposer may extend its round by with
/// Beacons (sent every half window while it evaluates), counted from the
/// first Beacon honoured in the round; later ones are ignored and the round
/// times out (a proposer that slow, or one that only sends Beacons, loses
/// its round).
pub const BEACON_EXTENSION: u32 = 2;
/// How often an undecided window's own latest votes are sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(2);
/// Proposals (values) held for the live window.
const MAX_VALUES: usize = 16;
/// Verified Cements held for the cemented tip (candidates for bundles).
const MAX_BUNDLES: usize = 4;
/// Messages for the next window held until this node gets there.
const MAX_FUTURE: usize = 64;
/// Most digests of checked messages this node forwards without counting
/// them (late for the tip window, or early for the next), kept until the
/// next window is cemented ([`Chain::passing`]): one per (kind, window,
/// round, signer), so a member's share is bounded by the rounds it may
/// use (300 members' two votes of the first rounds fit).
const MAX_PASSED: usize = 4096;
/// Cements refused by their signatures or form, remembered by hash (the
/// latest): the same bytes sent again cost no second check of a quorum of
/// signatures.
const MAX_REFUSED_CEMENTS: usize = 64;
/// Conflicting votes remembered per window (so that replaying one costs
/// no signature check): a member equivocating in every round to
/// [`MAX_ROUNDS_AHEAD`] fills far less.
const MAX_CONFLICTING: usize = 1024;
/// Verified Cements held for one window above the tip. Any quorum of a
/// window's precommits makes a valid Cement (the precommits are relayed to
/// everyone), so a window can have many; the next window's proposal names
/// the canonical one, which displaces one that no held proposal names.
const MAX_WINDOW_CEMENTS: usize = 4;
/// Proposals held for one window above the tip (see [`Chain::wait`]).
const MAX_WINDOW_PROPOSALS: usize = 4;

/// Why a message was rejected. `kind()` names the counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    WrongProposer,
    WrongNetwork,
    BadSignature,
    /// The maker's signature of a proposal (inside a Propose, or fetched);
    /// counted as `bad_signature`.
    BadMakerSignature,
    WrongParams(String),
    WrongWindow {
        expected: u64,
        got: u64,
    },
    WrongPrevious,
    WrongStateRoot {
        expected: Hash32,
        got: Hash32,
    },
    UnknownBundle,
    BadCheckpoint {
        segment: usize,
    },
    Vote(&'static str),
    Cement(&'static str),
    CementConflict {
        ours: [u8; 32],
        theirs: Hash32,
    },
    /// A candidate proof or registration (gossiped or carried) that fails
    /// a rule of docs/SPEC.md 9.9; the reason names the rule.
    Candidate(&'static str),
}

impl Reject {
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::WrongProposer => "wrong_proposer",
            Reject::WrongNetwork => "wrong_network",
            Reject::BadSignature | Reject::BadMakerSignature => "bad_signature",
            Reject::WrongParams(_) => "wrong_params",
            Reject::WrongWindow { .. } => "wrong_window",
            Reject::WrongPrevious => "wrong_previous",
            Reject::WrongStateRoot { .. } => "wrong_state_root",
            Reject::UnknownBundle => "unknown_bundle",
            Reject::BadCheckpoint { .. } => "bad_checkpoint",
            Reject::Vote(k) | Reject::Cement(k) => k,
            Reject::CementConflict { .. } => "cement_conflict",
            Reject::Candidate(k) => k,
        }
    }
}

impl Reject {
    /// The offence of the peer that sent a message of type `msg_type`
    /// refused for this reason, if no honest node sends or forwards such a
    /// message whatever its view ([`crate::net::misbehaviour`];
    /// docs/SPEC.md 10.7):
    /// - a Vote, Propose or Beacon whose own signature fails (checked
    ///   before any forward, `Chain::passing` included; keys are bound to
    ///   node ids, so no active set makes it valid), and a Vote, Propose,
    ///   Beacon or Cement for another network (checked first, everywhere);
    /// - a candidate proof or registration whose own signature fails: a
    ///   node forwards one only as a member, after checking that
    ///   signature (the key is bound to the id: the proof carries it, a
    ///   registration's is the candidate's), and a copy is forwarded
    ///   unchecked only when it is the same bytes as one checked; a
    ///   non-member forwards none;
    /// - a gossiped Cement whose precommits' signatures fail or that is
    ///   malformed (empty, too many, out of order): a node forwards a
    ///   Cement only once it passed `check_cement` (a copy of one held or
    ///   of a tip bundle was checked when it came; one with no room, or
    ///   wrong only for this node's set, is dropped unforwarded), and a
    ///   precommit's key is bound to its signer's id;
    /// - (judged later, so not here but as [`Action::Offence`]) a gossiped
    ///   candidate proof whose chain fails: members forward one only once
    ///   its chain verified;
    /// - in a catch-up answer (GetProposals, GetCements: never relayed,
    ///   built from the server's store of what it cemented, each checked
    ///   before it was stored): a Cement whose precommits do not verify,
    ///   are out of order, or are for another network, and a proposal
    ///   with the wrong parameters or too many candidate proofs.
    ///
    /// Not: a proposal's maker's signature (a Propose held for the next
    /// window is forwarded with only its own signature checked, and a
    /// fetched proposal whose maker the server did not know was stored on
    /// the word of its Cement, which does not cover that signature), a
    /// gossiped Cement's membership or quorum (judged against the set
    /// this node is at), a proof's VDF (forwarded before it is verified),
    /// nor anything that depends on the window, round,
    /// tip or active set this node is at.
    pub fn offence(&self, msg_type: u8) -> Option<crate::net::misbehaviour::Offence> {
        use crate::messages::{
            MSG_BEACON, MSG_CANDIDATE_PROOF, MSG_CEMENT, MSG_CEMENTS, MSG_PROPOSALS, MSG_PROPOSE,
            MSG_REGISTRATION, MSG_VOTE,
        };
        use crate::net::misbehaviour::Offence;
        match (msg_type, self) {
            (MSG_PROPOSE | MSG_BEACON, Reject::BadSignature)
            | (MSG_VOTE, Reject::Vote("vote_bad_signature"))
            | (MSG_CANDIDATE_PROOF, Reject::Candidate("candidate_bad_signature"))
            | (MSG_REGISTRATION, Reject::Candidate("registration_bad_signature"))
            | (MSG_CEMENT | MSG_CEMENTS, Reject::Cement("cement_bad_signature")) => {
                Some(Offence::BadSignature)
            }
            (MSG_PROPOSE | MSG_BEACON, Reject::WrongNetwork)
            | (MSG_VOTE, Reject::Vote("vote_wrong_network"))
            | (MSG_CEMENT | MSG_CEMENTS, Reject::Cement("cement_wrong_network")) => {
                Some(Offence::WrongNetwork)
            }
            (MSG_CEMENT | MSG_CEMENTS, Reject::Cement("cement_malformed"))
            | (MSG_PROPOSALS, Reject::WrongParams(_))
            | (MSG_PROPOSALS, Reject::Candidate("candidate_too_many")) => Some(Offence::Malformed),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::WrongProposer => {
                f.write_str("not from the round's proposer, or by a non-member")
            }
            Reject::WrongNetwork => f.write_str("for another network"),
            Reject::BadSignature => f.write_str("bad signature"),
            Reject::BadMakerSignature => f.write_str("bad signature of the proposal's maker"),
            Reject::WrongParams(why) => write!(f, "wrong parameters: {why}"),
            Reject::WrongWindow { expected, got } => {
                write!(f, "wrong window: expected {expected}, got {got}")
            }
            Reject::WrongPrevious => f.write_str("does not build on the cemented window"),
            Reject::WrongStateRoot { expected, got } => {
                write!(f, "wrong state root: ours {expected}, proposal's {got}")
            }
            Reject::UnknownBundle => {
                f.write_str("names a bundle that is not a Cement of the window")
            }
            Reject::BadCheckpoint { segment } => {
                write!(f, "bad checkpoint: segment {segment} does not verify")
            }
            Reject::Vote(k) | Reject::Cement(k) | Reject::Candidate(k) => f.write_str(k),
            Reject::CementConflict { ours, theirs } => write!(
                f,
                "a Cement conflicts with a cemented window: ours {}, theirs {theirs}",
                hex::encode(ours)
            ),
        }
    }
}

/// Consecutive proposals to verify together, with their proofs. A live
/// batch is one proposal of the window being agreed on; a catch-up batch
/// carries the Cement of each window, checked in the same call.
#[derive(Clone, Debug)]
pub struct Batch {
    pub from: Option<PeerIndex>,
    pub proposals: Vec<Proposal>,
    pub proofs: Vec<Proof>,
    /// One per proposal (catch-up), or empty (live).
    pub cements: Vec<Cement>,
    /// The canonical bundle of the window before the first proposal, when
    /// it replaces the one this node holds.
    pub prev_bundle: Option<Cement>,
    /// The active set each Cement is checked against (one per Cement,
    /// shared while it does not change: 300 members' keys are 600 kB), and
    /// the one for `prev_bundle`.
    pub sets: Vec<std::sync::Arc<ActiveSet>>,
    pub prev_set: Option<ActiveSet>,
    /// Live: the chains of the candidate proofs the proposal carries,
    /// verified in the same backend call after `proofs`.
    pub candidates: Vec<Proof>,
    /// Set by [`Batch::check_cements`]: the window of the first Cement
    /// (`prev_bundle` counts as the window before the first proposal)
    /// whose signatures do not verify against its window's set.
    pub bad_cement: Option<u64>,
}

impl Batch {
    pub fn is_live(&self) -> bool {
        self.cements.is_empty()
    }

    /// Catch-up: checks every Cement's signatures against the set of its
    /// window, `prev_bundle` first, and returns how many proofs are left
    /// to verify: those before the first that fails (whose window is kept
    /// in `bad_cement`, for [`Chain::on_verified`] to drop it). Run by the
    /// verifier beside the VDF (signature checks are costly, and the
    /// machine does no work itself).
    pub fn check_cements(&mut self, network_id: &[u8; 32], quorum: Quorum) -> usize {
        if let (Some(prev), Some(set)) = (&self.prev_bundle, &self.prev_set) {
            if prev.verify(network_id, prev.window, set, quorum).is_err() {
                self.bad_cement = Some(prev.window);
                return 0;
            }
        }
        for (i, (c, set)) in self.cements.iter().zip(&self.sets).enumerate() {
            if c.verify(network_id, c.window, set, quorum).is_err() {
                self.bad_cement = Some(c.window);
                return i;
            }
        }
        self.proofs.len()
    }
}

/// One cemented window, to be written in one atomic batch.
#[derive(Clone, Debug)]
pub struct Cemented {
    pub proposal: Proposal,
    /// This node's Cement of the window (canonical until the next window
    /// names another).
    pub cement: Cement,
    /// The canonical bundle of the window before (it replaces the stored
    /// one), when it is not the one already stored.
    pub prev_bundle: Option<Cement>,
    /// The state root after this window (window - 1 paid).
    pub root: Hash32,
    /// The accounts this window's cementing paid (the maker of the window
    /// before and its bundle's signers).
    pub paid: Vec<NodeId>,
    /// The active set that cemented this window.
    pub set: ActiveSet,
    /// Where the set after this window differs from `set`: the membership
    /// certificate of this window (docs/SPEC.md 13.4), kept to serve
    /// fast-sync.
    pub certificate: Option<Certificate>,
}

/// The highest step this node has signed, and its lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed {
    pub window: u64,
    pub round: u32,
    /// 0 propose, 1 prevote, 2 precommit.
    pub step: u8,
    pub locked: Option<(Hash32, u32)>,
}

impl Signed {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(50);
        v.extend_from_slice(&self.window.to_le_bytes());
        v.extend_from_slice(&self.round.to_le_bytes());
        v.push(self.step);
        match self.locked {
            Some((h, r)) => {
                v.push(1);
                v.extend_from_slice(&h.0);
                v.extend_from_slice(&r.to_le_bytes());
            }
            None => v.push(0),
        }
        v
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let window = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let round = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
        let step = *b.get(12)?;
        let locked = match (b.get(13)?, b.len()) {
            (0, 14) => None,
            (1, 50) => Some((
                Hash32(b[14..46].try_into().ok()?),
                u32::from_le_bytes(b[46..50].try_into().ok()?),
            )),
            _ => return None,
        };
        (step <= 2).then_some(Signed {
            window,
            round,
            step,
            locked,
        })
    }
}

/// What the node must do, in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Verify `batch` (one backend call; for catch-up also the Cements'
    /// signatures), then call [`Chain::on_verified`].
    Verify(Batch),
    /// Evaluate window `window` from `start` (= T(window-1)) with K
    /// checkpoints, then call [`Chain::on_evaluated`].
    Evaluate { window: u64, start: Hash32 },
    /// Record, synced, that this window's T is verified.
    Applied { window: u64, t: Hash32 },
    /// Write these cemented windows (one atomic batch); the tip has moved.
    Cement(Vec<Cemented>),
    /// Record, synced, the highest signed step, before the next Send.
    Persist(Signed),
    /// Send to one peer, or to every peer when `to` is `None`.
    Send { to: Option<PeerIndex>, msg: Message },
    /// Ask `peer` for cemented windows: `proposals` (GetProposals: from,
    /// count) and `cements` (GetCements: from, count), one or both.
    Request {
        peer: PeerIndex,
        proposals: Option<(u64, u32)>,
        cements: Option<(u64, u32)>,
    },
    /// Call [`Chain::on_timeout`] with these after `after`.
    Arm {
        window: u64,
        timer: Timeout,
        round: u32,
        after: Duration,
    },
    /// Verify gossiped candidate proofs (`chains[i]` is `proofs[i]`'s
    /// chain) in one backend call, then call
    /// [`Chain::on_candidates_verified`].
    VerifyCandidates {
        proofs: Vec<CandidateProof>,
        chains: Vec<Proof>,
    },
    /// Evaluate this node's candidate chain for `window` from `start`, then
    /// call [`Chain::on_candidate_evaluated`].
    EvaluateCandidate { window: u64, start: Hash32 },
    /// The active set changed (the node tells its transport).
    Members(ActiveSet),
    /// Log this rejection (already counted).
    Rejected {
        peer: Option<PeerIndex>,
        window: u64,
        reason: Reject,
    },
    /// The message was dropped before any signature check (a window gone
    /// by or too far ahead, no room), or is held back until checked (a
    /// gossiped candidate proof waiting for its chain's verification): the
    /// node does not forward it now (a forged but well-formed message would
    /// otherwise cross the whole network, every node dropping it unchecked
    /// and passing it on).
    Unchecked,
    /// Forward `msg`, held back until checked, to the peers that lack it
    /// (not back to `from`, the peer it came from): a gossiped candidate
    /// proof whose chain verified.
    Forward {
        from: Option<PeerIndex>,
        msg: Message,
    },
    /// `peer`'s message, judged after it was handled, was an offence of
    /// its sender (no honest node sends or forwards it): a gossiped
    /// candidate proof whose chain failed (forwarded only once verified).
    Offence {
        peer: PeerIndex,
        offence: crate::net::misbehaviour::Offence,
    },
}

/// The fixed rules from the genesis.
#[derive(Clone, Debug)]
pub struct Rules {
    pub suite: HashSuite,
    pub d: u64,
    pub checkpoints: u32,
    pub network_id: [u8; 32],
    /// The genesis set: its members hold peer indexes `0..len` (the
    /// transport's, in genesis order).
    pub set: ActiveSet,
    pub quorum: Quorum,
    pub emission: Emission,
    /// Rank 0 of window 1 (the genesis bootstrap peer).
    pub first_proposer: NodeId,
    pub window: Duration,
    pub proposer_timeout: Duration,
    pub joining: JoinRules,
}

impl Rules {
    pub fn from_genesis(g: &Genesis) -> Self {
        Rules {
            suite: g.hash,
            d: g.d,
            checkpoints: g.checkpoints as u32,
            network_id: g.network_id(),
            set: g.active_set(),
            quorum: g.quorum,
            emission: g.emission,
            first_proposer: g.node_id(g.proposer()),
            window: Duration::from_secs_f64(g.window_secs),
            proposer_timeout: g.proposer_timeout(),
            joining: g.joining(),
        }
    }

    /// The failover order of `window` (docs/SPEC.md 9.1): the maker of the
    /// window before first, unless `window` hands rank 0 over.
    pub fn failover_order(
        &self,
        set: &ActiveSet,
        window: u64,
        prev_t: &Hash32,
        prev_maker: NodeId,
    ) -> Vec<NodeId> {
        let keep = !hands_over(window, self.joining.tenure());
        set.failover_order(prev_t, keep.then_some(&prev_maker))
    }

    /// The prevote and precommit timeouts of `round`: short, growing with
    /// the round, never above the propose timeout.
    fn step_timeout(&self, round: u32) -> Duration {
        (Duration::from_millis(1000) + Duration::from_millis(500) * round.min(64))
            .min(self.proposer_timeout)
    }
}

/// What one peer claims to have, and how far we trust the claim.
#[derive(Clone, Copy, Debug, Default)]
struct Claim {
    /// The peer's latest claimed cemented window.
    window: u64,
    /// A genesis peer or a member of the active set (the node says, in
    /// [`Chain::on_claim`]); otherwise a guest.
    member: bool,
    /// Windows per second its last useful answer brought (`answer_rate`).
    rate: Option<f64>,
    strikes: u32,
    demoted_until: Option<Instant>,
    /// Demoted for a forged maker's signature in proposals it sent
    /// unasked: its unasked proposals go unread until then (a peer demoted
    /// for a slow answer still has its late answer read).
    unread_until: Option<Instant>,
    /// A genesis peer that left ([`Chain::on_peer_left`]): no claim until
    /// its next Tip, its record (strikes, rate, demotion) kept.
    gone: bool,
}

fn sig_prefix(sig: &[u8]) -> [u8; 16] {
    let mut p = [0u8; 16];
    let n = sig.len().min(16);
    p[..n].copy_from_slice(&sig[..n]);
    p
}

/// Windows per second of a catch-up answer that made the linked run
/// `gained` windows longer `took` after its request; never counted faster
/// than one answer per request interval (a peer answering one window at
/// once is no faster than the pace allows).
fn answer_rate(gained: u64, took: Duration) -> f64 {
    let floor = Duration::from_secs_f64(1.0 / REQUEST_PACE);
    gained as f64 / took.max(floor).as_secs_f64()
}

/// A full queue whose entries came from the peers `held` (in order), and
/// a new entry from `new`: the index of the entry to drop for it (the
/// latest of the peer holding most, when `new` holds fewer than that less
/// one), or `None` to drop the new one. A peer flooding the queue keeps
/// at most its share of it, not the queue.
fn fair_share<P: Copy + Eq + std::hash::Hash + Ord>(held: &[P], new: P) -> Option<usize> {
    let mut count: HashMap<P, usize> = HashMap::new();
    for p in held {
        *count.entry(*p).or_default() += 1;
    }
    let mine = count.get(&new).copied().unwrap_or(0);
    let (&top, &most) = count.iter().max_by_key(|&(p, n)| (*n, *p))?;
    if mine + 1 >= most {
        return None;
    }
    held.iter().rposition(|p| *p == top)
}

fn weight(p: &Proposal) -> usize {
    crate::proposal::HEADER_LEN + SIGNATURE_LEN + 32 * p.checkpoints.len()
}

/// A message for a window this node has not reached yet, with the peer
/// that sent it until that peer leaves ([`Chain::on_peer_left`]: whoever
/// holds its index next did not send it).
#[derive(Clone, Debug)]
enum Early {
    Propose(Option<PeerIndex>, Box<Propose>),
    Vote(Option<PeerIndex>, Box<Vote>),
    Beacon(Option<PeerIndex>, Box<Beacon>),
}

impl Early {
    fn peer(&self) -> Option<PeerIndex> {
        match self {
            Early::Propose(p, _) | Early::Vote(p, _) | Early::Beacon(p, _) => *p,
        }
    }
    /// Its sender forgotten: the sender left.
    fn orphan(&mut self) {
        match self {
            Early::Propose(p, _) | Early::Vote(p, _) | Early::Beacon(p, _) => *p = None,
        }
    }
    fn signer(&self) -> NodeId {
        match self {
            Early::Propose(_, m) => m.key.signer,
            Early::Vote(_, v) => v.key.signer,
            Early::Beacon(_, b) => b.signer,
        }
    }
    fn window(&self) -> u64 {
        match self {
            Early::Propose(_, m) => m.key.window,
            Early::Vote(_, v) => v.key.window,
            Early::Beacon(_, b) => b.window,
        }
    }
    fn round(&self) -> u32 {
        match self {
            Early::Propose(_, m) => m.key.round,
            Early::Vote(_, v) => v.key.round,
            Early::Beacon(_, b) => b.round,
        }
    }
    /// What one signer may say once: (kind, window, round, signer).
    fn slot(&self) -> (u8, u64, u32, NodeId) {
        let kind = match self {
            Early::Propose(..) => 0,
            Early::Vote(_, v) => match v.key.kind {
                VoteKind::Prevote => 1,
                VoteKind::Precommit => 2,
            },
            Early::Beacon(..) => 3,
        };
        (kind, self.window(), self.round(), self.signer())
    }
    /// What the signature covers and the signature, hashed: one exact
    /// signed message (a Propose's proposal is bound by the value named).
    fn digest(&self) -> [u8; 32] {
        let bytes = match self {
            Early::Propose(_, m) => {
                let mut b = m.key.signed_bytes();
                b.extend_from_slice(&m.signature);
                b
            }
            Early::Vote(_, v) => v.encode(),
            Early::Beacon(_, b) => b.encode(),
        };
        HashSuite::Sha256.hash(&bytes).0
    }
    fn signed_in(&self, set: &ActiveSet) -> bool {
        match self {
            Early::Propose(_, m) => m.signed_in(set),
            Early::Vote(_, v) => v.check(set).is_ok(),
            Early::Beacon(_, b) => b.signed_in(set),
        }
    }
    fn bad_signature(&self) -> Reject {
        match self {
            Early::Vote(..) => Reject::Vote("vote_bad_signature"),
            _ => Reject::BadSignature,
        }
    }
}

/// What [`Chain::passing`] makes of a message this node does not count now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passing {
    /// Signed by a member of the set it was checked against, the first
    /// such message of its slot ([`Early::slot`]): forwarded.
    Genuine,
    /// Not forwarded, but may be held for the next window: a signer outside
    /// the set, or a second message for one slot (a re-signed copy or an
    /// equivocation: the agreement judges it).
    Hold,
    /// Neither forwarded nor held: a bad signature (rejected), or a round
    /// or kind no node needs from the window.
    Drop,
}

/// The agreement on the window after the cemented tip.
#[derive(Debug)]
struct Live {
    window: u64,
    agreement: Agreement,
    since: Instant,
    /// Proposals seen for this window, by hash, with who sent them.
    values: HashMap<Hash32, (Option<PeerIndex>, Proposal)>,
    /// The latest round each value was proposed in (the oldest goes first
    /// when [`MAX_VALUES`] are held).
    round_of: HashMap<Hash32, u32>,
    /// This node's own new proposal for this window: proposed again in a
    /// later round rather than signed afresh (a new signature is a new
    /// value).
    own: Option<Hash32>,
    /// Rounds whose Propose was taken (first wins).
    proposed_rounds: HashSet<u32>,
    /// Values waiting for validation (a bundle, or the verifier).
    to_validate: VecDeque<Hash32>,
    /// Values waiting for the bundle they name.
    blocked: Vec<Hash32>,
    /// The value being verified on the backend.
    verifying: Option<Hash32>,
    /// Votes counted, with the first bytes of their signature (dedup before
    /// any signature check: the same bytes again are a resend, ignored; the
    /// same vote re-signed is counted as `vote_duplicate`).
    votes: HashMap<VoteKey, [u8; 16]>,
    /// Votes refused as conflicting (an equivocation), with the first bytes
    /// of their signature: the same bytes again cost no second signature
    /// check (anyone can replay a member's equivocation). At most
    /// [`MAX_CONFLICTING`].
    conflicting: HashMap<VoteKey, [u8; 16]>,
    /// Precommits with their signatures, to assemble a Cement.
    precommits: HashMap<(u32, Hash32), Vec<Vote>>,
    /// Prevotes for a value, with their signatures: the proof of lock a
    /// node sends with a re-proposal and with its resends, so that a node
    /// that missed them (down, restarted, cut off) can prevote the locked
    /// value again. Kept for the rounds from one below the current one
    /// and for this node's valid round.
    prevotes: HashMap<(u32, Hash32), Vec<Vote>>,
    /// The round in which this node must propose a new value once T is known.
    want_propose: Option<u32>,
    last_beacon: Option<Instant>,
    /// The proposer's Beacons honoured in the current round: (round, the
    /// first, the last). A Beacon carries no time, so one captured copy
    /// could be replayed for ever: at most one per quarter window, and
    /// none more than [`BEACON_EXTENSION`] proposer timeouts after the
    /// first of the round.
    beacons: Option<(u32, Instant, Instant)>,
    /// When the round's proposer was last heard from (round start, its
    /// Propose or a Beacon): after a window of silence the next rank
    /// starts evaluating, so that it can propose as soon as the round
    /// changes.
    heard: Instant,
    /// When the missing bundle of a waiting value was last asked for.
    asked_bundle: Option<Instant>,
    /// This node's latest votes in this window, sent again every
    /// [`RESEND_EVERY`] while the window is undecided (a node that was
    /// down or cut off when they were sent gets them then).
    mine: Vec<Vote>,
    /// This node's Propose of the current round (and the bundle it names),
    /// sent again with the votes: a peer that was not listening yet (not
    /// started, reconnecting) gets it then.
    my_propose: Vec<Message>,
    last_resend: Instant,
}

/// Verified Cements of the tip window (candidates for the bundle the next
/// window's proposal names), this node's own first, each with its hash
/// (computed once: a Cement of 200 precommits is 660 kB, and a bundle is
/// looked up by hash on every proposal and every catch-up step).
#[derive(Clone, Debug, Default)]
struct Bundles(Vec<(Hash32, Cement)>);

impl Bundles {
    fn of(c: Cement) -> Self {
        Bundles(vec![(c.hash(), c)])
    }
    /// This node's own (the canonical one until the next window names
    /// another).
    fn first(&self) -> Option<&Cement> {
        self.0.first().map(|(_, c)| c)
    }
    fn first_hash(&self) -> Option<Hash32> {
        self.0.first().map(|(h, _)| *h)
    }
    fn find(&self, hash: &[u8; 32]) -> Option<&Cement> {
        self.0.iter().find(|(h, _)| h.0 == *hash).map(|(_, c)| c)
    }
    fn contains(&self, hash: &Hash32) -> bool {
        self.0.iter().any(|(h, _)| h == hash)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn hash_at(&self, i: usize) -> Hash32 {
        self.0[i].0
    }
    fn push(&mut self, hash: Hash32, c: Cement) {
        self.0.push((hash, c));
    }
    fn remove(&mut self, i: usize) {
        self.0.remove(i);
    }
    /// Drops the one with `hash` (never the first, our own).
    fn drop_hash(&mut self, hash: &Hash32) {
        if let Some(i) = (1..self.0.len()).find(|&i| self.0[i].0 == *hash) {
            self.0.remove(i);
        }
    }
}

/// What the machine needs to know of the cemented tip beside [`Tip`].
#[derive(Clone, Debug)]
pub struct TipMeta {
    /// The maker of the tip's proposal (the genesis proposer at window 0):
    /// rank 0 of the next window unless it hands over (SPEC 9.1).
    pub proposer: NodeId,
    /// What the tip's proposal carried (settled with the next window).
    pub extras: Extras,
    /// The active set that cemented the tip (the genesis set at window 0):
    /// the tip's bundles are checked against it.
    pub set: ActiveSet,
    /// T(tip - 1) (T(0) at windows 0 and 1): candidate proofs of that
    /// window may still be carried. Unknown (None) where the tip was
    /// installed from a snapshot: the proposal before it is not stored,
    /// and T(0) in its place judged every such proof with a wrong T.
    pub prev_t: Option<Hash32>,
}

impl TipMeta {
    /// The tip of a network at window 0.
    pub fn genesis(g: &Genesis) -> Self {
        TipMeta {
            proposer: g.node_id(g.proposer()),
            extras: Extras::default(),
            set: g.active_set(),
            prev_t: Some(g.timechain().t0()),
        }
    }
}

/// Most gossiped candidate proofs held (verified or waiting).
const MAX_POOLED_PROOFS: usize = 512;
/// Most gossiped candidate proofs verified in one backend call.
const CANDIDATE_BATCH: usize = 64;
/// Most registrations held.
const MAX_POOLED_REGISTRATIONS: usize = 64;

/// The state machine. See the module docs.
#[derive(Debug)]
pub struct Chain {
    rules: Rules,
    keys: Option<std::sync::Arc<NodeKeys>>,
    me: NodeId,
    /// The cemented tip.
    tip: Tip,
    /// The maker of the tip's proposal (rank 0 of the next window unless
    /// it hands over).
    tip_proposer: NodeId,
    tip_extras: Extras,
    tip_set: ActiveSet,
    /// T(tip - 1), where known ([`TipMeta::prev_t`]).
    prev_t: Option<Hash32>,
    // Joining (docs/SPEC.md 9.9).
    /// Verified gossiped candidate proofs, for this node's proposals.
    pool: BTreeMap<(NodeId, u64), CandidateProof>,
    /// Gossiped proofs waiting for verification, with the peer that sent
    /// each (when full, a peer holding fewer takes the place of the latest
    /// of the peer holding most).
    unverified: VecDeque<(Option<PeerIndex>, CandidateProof)>,
    /// Proofs sent to the verifier in one call: halved after a call that
    /// found a bad one (only the proofs before it count, the rest go back),
    /// doubled after a clean one, from 1 to [`CANDIDATE_BATCH`]. A flood of
    /// junk costs about one chain per proof, not a batch per proof.
    candidate_batch: usize,
    /// Who sent each proof in the verifier now, and its (candidate,
    /// window) (they go back with it).
    candidate_from: Vec<(Option<PeerIndex>, (NodeId, u64))>,
    /// Gossiped proofs whose chain failed verification, by (window,
    /// candidate): the same proof sent again is dropped before any check
    /// (at most [`MAX_POOLED_PROOFS`], the oldest window's going first,
    /// forgotten as the windows age).
    bad_proofs: BTreeSet<(u64, NodeId)>,
    verifying_candidates: bool,
    /// Registrations whose signature checked, by candidate.
    registrations: BTreeMap<NodeId, Registration>,
    /// This node's own candidate chain being evaluated, and the windows
    /// it published.
    candidate_evaluating: Option<u64>,
    /// The first and last windows of the run of consecutive windows this
    /// node sent candidate proofs for.
    candidate_streak: Option<(u64, u64)>,
    /// The cemented window at which this node last sent its registration.
    registration_sent: Option<u64>,
    /// Consensus state after the tip, and its root.
    state: State,
    root: Hash32,
    /// Verified Cements of the tip window, by hash (ours first).
    bundles: Bundles,
    /// T of the window after the tip, once a proposal for it verified.
    applied: Option<(u64, Hash32)>,
    /// Checkpoints of a window this node has (evaluated or verified).
    known: Vec<(u64, Vec<Hash32>)>,
    evaluating: Option<u64>,
    live: Option<Live>,
    /// Messages for the next window, with their digests ([`Early::digest`]).
    early: Vec<([u8; 32], Early)>,
    /// Digests of messages not counted here whose signature checked, by
    /// slot ([`Chain::passing`]).
    passed: HashMap<(u8, u64, u32, NodeId), [u8; 32]>,
    signed: Option<Signed>,
    // Catch-up.
    claims: HashMap<PeerIndex, Claim>,
    waiting: BTreeMap<u64, Vec<(Option<PeerIndex>, Proposal)>>,
    /// Verified Cements of windows from the tip up, with their hashes
    /// (computed once: a Cement of 200 precommits is 660 kB).
    waiting_cements: BTreeMap<u64, Vec<(Hash32, Cement)>>,
    waiting_bytes: usize,
    waiting_budget: usize,
    /// Cements refused, by hash, with why ([`MAX_REFUSED_CEMENTS`]).
    refused_cements: VecDeque<(Hash32, &'static str)>,
    /// Bytes `waiting_cements` may hold ([`MAX_CEMENT_BYTES`]).
    cement_budget: usize,
    /// A verification is running (live or catch-up).
    verifying: bool,
    /// The last window of the catch-up batch being verified, and its
    /// proposal's hash (what the next window's proposal links onto).
    verifying_upto: u64,
    verifying_link: [u8; 32],
    requested: Option<Requested>,
    /// Catch-up requests: [`REQUEST_PACE`].
    pace: Pace,
    /// [`BATCH_BYTES`], or what [`Chain::set_batch_bytes`] set.
    batch_bytes: usize,
    signature_checks: u64,
    rejected: BTreeMap<&'static str, u64>,
    stopped: bool,
    started: bool,
    last_window: Option<u64>,
    /// `--min-window-secs` ([`Chain::set_min_window`]).
    min_window: Duration,
    /// The latest time an event brought.
    clock: Instant,
}

impl Chain {
    /// A machine at cemented `tip` with `state` after it; `tip_proposer`
    /// made the tip's proposal (the genesis proposer at window 0); `bundle`
    /// is the stored Cement of the tip window (none at window 0). `keys`
    /// sign this node's proposals and votes (none: it only watches).
    pub fn new(
        rules: Rules,
        keys: Option<std::sync::Arc<NodeKeys>>,
        tip: Tip,
        meta: TipMeta,
        state: State,
        bundle: Option<Cement>,
    ) -> Self {
        let me = keys
            .as_ref()
            .map(|k| NodeId::of(k.verifying_key()))
            .unwrap_or(NodeId([0; 32]));
        let root = state.root();
        Chain {
            rules,
            keys,
            me,
            tip,
            tip_proposer: meta.proposer,
            tip_extras: meta.extras,
            tip_set: meta.set,
            prev_t: meta.prev_t,
            pool: BTreeMap::new(),
            unverified: VecDeque::new(),
            candidate_batch: CANDIDATE_BATCH,
            candidate_from: Vec::new(),
            bad_proofs: BTreeSet::new(),
            verifying_candidates: false,
            registrations: BTreeMap::new(),
            candidate_evaluating: None,
            candidate_streak: None,
            registration_sent: None,
            state,
            root,
            bundles: bundle.map(Bundles::of).unwrap_or_default(),
            applied: None,
            known: Vec::new(),
            evaluating: None,
            live: None,
            early: Vec::new(),
            passed: HashMap::new(),
            signed: None,
            claims: HashMap::new(),
            waiting: BTreeMap::new(),
            waiting_cements: BTreeMap::new(),
            waiting_bytes: 0,
            waiting_budget: MAX_WAITING_BYTES,
            refused_cements: VecDeque::new(),
            cement_budget: MAX_CEMENT_BYTES,
            verifying: false,
            verifying_upto: 0,
            verifying_link: [0; 32],
            requested: None,
            pace: Pace::default(),
            batch_bytes: BATCH_BYTES,
            signature_checks: 0,
            rejected: BTreeMap::new(),
            stopped: false,
            started: false,
            last_window: None,
            min_window: Duration::ZERO,
            clock: Instant::now(),
        }
    }

    /// The highest step signed before a restart (from the database).
    pub fn restore_signed(&mut self, s: Option<Signed>) {
        self.signed = s;
    }

    /// Proposal bytes per verification call and fetched ahead of it
    /// (default [`BATCH_BYTES`]; a GPU verifier wants up to
    /// [`MAX_BATCH_WINDOWS`] windows whatever their size).
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.batch_bytes = bytes.max(1);
    }
    pub fn set_waiting_budget(&mut self, bytes: usize) {
        self.waiting_budget = bytes;
    }
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks
    }
    /// No window past this one is proposed or agreed on (devnets, tests).
    /// A proposal no sooner than `d` after this node opened the window
    /// (after cementing the one before): pacing for tiny D, local only.
    /// Capped at half the proposer timeout: a proposer paced past its own
    /// propose timeout would prevote nil in its own round.
    pub fn set_min_window(&mut self, d: Duration) {
        self.min_window = d.min(self.rules.proposer_timeout / 2);
    }

    pub fn set_last_window(&mut self, window: Option<u64>) {
        self.last_window = window;
    }
    fn past_last_window(&self, window: u64) -> bool {
        self.last_window.is_some_and(|l| window > l)
    }
    pub fn node_id(&self) -> NodeId {
        self.me
    }
    /// Whether this node is in the active set that votes on the window
    /// after the tip.
    pub fn is_member(&self) -> bool {
        self.keys.is_some() && self.state.active().index_of(&self.me).is_some()
    }

    /// `active` (a member), `candidate` (following, counting windows or
    /// registered), `syncing` (behind) or `none` (no keys).
    pub fn membership(&self) -> &'static str {
        if self.is_member() {
            "active"
        } else if self.keys.is_none() {
            "none"
        } else if self.lag() > 1 || !self.started {
            "syncing"
        } else {
            "candidate"
        }
    }

    /// This node's candidate entry (count, last window, registered) in the
    /// state after the tip.
    pub fn candidacy(&self) -> Option<&crate::consensus::joining::Candidate> {
        self.state.roster().candidates.get(&self.me)
    }
    /// The cemented tip.
    pub fn tip(&self) -> Tip {
        self.tip
    }
    /// The highest applied window (the tip, or the window after it once a
    /// proposal for it verified).
    pub fn applied(&self) -> u64 {
        self.applied.map_or(self.tip.window, |(w, _)| w)
    }
    /// T of [`Chain::applied`].
    pub fn applied_t(&self) -> Hash32 {
        self.applied.map_or(self.tip.t, |(_, t)| t)
    }
    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn state_root(&self) -> Hash32 {
        self.root
    }
    /// The round of the live agreement.
    pub fn round(&self) -> Option<u32> {
        self.live.as_ref().map(|l| l.agreement.round())
    }
    /// Whether this node proposes the live round.
    pub fn is_proposer(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.agreement.proposer(l.agreement.round()) == self.me)
    }
    pub fn lag(&self) -> u64 {
        self.best_known().saturating_sub(self.tip.window)
    }
    /// The highest window claimed by a peer in good standing: by a member
    /// while any member's claim stands, else by a guest (what `lag`, and so
    /// `phase` and `membership`, report).
    pub fn best_known(&self) -> u64 {
        let members = self.standing().any(|c| c.member);
        self.standing()
            .filter(|c| c.member || !members)
            .map(|c| c.window)
            .fold(self.tip.window, u64::max)
    }
    /// The highest window any peer in good standing claims, guests
    /// included: what catch-up goes after ([`Chain::pick_peer`] asks
    /// members first).
    fn best_claimed(&self) -> u64 {
        self.standing()
            .map(|c| c.window)
            .fold(self.tip.window, u64::max)
    }
    /// Whether `c` is nothing new to catch-up: a window gone by, or a
    /// Cement held (the tip's bundles, or one waiting above the tip).
    fn holds_cement(&self, c: &Cement) -> bool {
        if c.window < self.tip.window {
            return true;
        }
        let h = c.hash();
        self.bundles.contains(&h)
            || self
                .waiting_cements
                .get(&c.window)
                .is_some_and(|cs| cs.iter().any(|(x, _)| *x == h))
    }
    fn standing(&self) -> impl Iterator<Item = &Claim> {
        self.claims
            .values()
            .filter(|c| c.demoted_until.is_none() && !c.gone)
    }
    /// How many genesis peers and members have sent a Tip and not left
    /// since (guests' do not count: the start waits for the peers that can
    /// tell a proposer that lost its data that it is behind).
    pub fn heard_from(&self) -> usize {
        self.claims.values().filter(|c| c.member && !c.gone).count()
    }
    pub fn is_demoted(&self, peer: PeerIndex) -> bool {
        self.claims
            .get(&peer)
            .is_some_and(|c| c.demoted_until.is_some())
    }
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// "stopped", "done" (past the last window), "catching-up",
    /// "proposing" (this node proposes the live round) or "following".
    pub fn phase(&self) -> &'static str {
        if self.stopped {
            "stopped"
        } else if self.past_last_window(self.tip.window + 1) {
            "done"
        } else if self.lag() > 1 {
            "catching-up"
        } else if self.is_proposer() {
            "proposing"
        } else {
            "following"
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Starts the agreement (the node calls it once its peers had a chance
    /// to connect).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        self.started = true;
        self.open_window(now, &mut out);
        self.next_work(now, &mut out);
        out
    }

    // ---- messages ------------------------------------------------------

    /// A message from `peer` (requests are the node's to serve). A Tip is
    /// taken for a guest's: the node passes Tips to [`Chain::on_claim`].
    pub fn on_message(&mut self, peer: PeerIndex, msg: Message, now: Instant) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        match msg {
            Message::Tip { cemented, .. } => self.on_tip(peer, cemented.window, false, now),
            Message::Proposals(ps) => self.on_proposals(peer, ps, now, &mut out),
            Message::Cements(cs) => {
                // The answer to our request is counted against the pace,
                // once; anything else a peer sends is not (a peer could
                // otherwise spend the allowance and stop our requests).
                if let Some(r) = self
                    .requested
                    .as_mut()
                    .filter(|r| r.peer == peer && r.cements)
                {
                    r.cements = false;
                    self.pace.charge(cs.iter().map(Cement::weight).sum(), now);
                }
                // The answer to a request for Cements alone: useful when it
                // brings one this node did not hold and does not refuse
                // (whether it is kept: room, the set it is checked
                // against, is no doing of the peer's); else the peer is
                // demoted, as for proposals (an empty answer kept a claim
                // standing and catch-up asking it again and again).
                let alone = self
                    .requested
                    .is_some_and(|r| r.peer == peer && !r.proposals);
                let mut useful = false;
                for c in cs {
                    let new = alone && !self.holds_cement(&c);
                    let n = out.len();
                    self.on_cement(Some(peer), c, now, &mut out);
                    let refused = out[n..].iter().any(|a| {
                        matches!(
                            a,
                            Action::Rejected {
                                reason: Reject::Cement(_) | Reject::CementConflict { .. },
                                ..
                            }
                        )
                    });
                    useful |= new && !refused;
                }
                if alone {
                    self.requested = None;
                    if useful {
                        self.claims.entry(peer).or_default().strikes = 0;
                    } else {
                        self.demote(peer, now);
                    }
                }
            }
            Message::Propose(p) => self.on_propose(Some(peer), p, now, &mut out),
            Message::Vote(v) => self.on_vote(Some(peer), v, now, &mut out),
            Message::Cement(c) => self.on_cement(Some(peer), *c, now, &mut out),
            Message::Beacon(b) => self.on_beacon(Some(peer), b, &mut out),
            Message::CandidateProof(p) => self.on_candidate_proof(Some(peer), *p, &mut out),
            Message::Registration(g) => self.on_registration(Some(peer), *g, &mut out),
            Message::GetProposals { .. } | Message::GetCements { .. } => {}
        }
        self.next_work(now, &mut out);
        out
    }

    /// A Tip from `peer` claiming cemented `window`, `member` when the
    /// sender is a genesis peer or a member of the active set (the node
    /// knows who sent it; [`Chain::on_message`] takes every Tip for a
    /// guest's). Members' claims are asked first (module doc).
    pub fn on_claim(
        &mut self,
        peer: PeerIndex,
        window: u64,
        member: bool,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        self.on_tip(peer, window, member, now);
        self.next_work(now, &mut out);
        out
    }

    /// The node that held `peer`'s index left it (its connection closed,
    /// or another node's took the index): what it sent is no longer held
    /// against whoever holds the index next.
    /// - Messages it sent that are held for the next window, and the
    ///   catch-up proposals and candidate proofs it sent that wait for
    ///   verification, keep no sender: judged later, they are charged to
    ///   nobody.
    /// - A request outstanding to it counts as unanswered now (demoted as
    ///   at [`REQUEST_TIMEOUT`], so leaving is no way out of a demotion),
    ///   and catch-up asks another peer at once rather than 5 s later.
    /// - Its claim goes (it cannot answer while gone; it sends a Tip again
    ///   when back). A genesis peer's index is its own (the genesis
    ///   order), so its record stays: strikes, rate and demotion hold
    ///   across its reconnects. Any other index is taken next by whoever
    ///   connects: its record goes.
    pub fn on_peer_left(&mut self, peer: PeerIndex, now: Instant) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        for (_, e) in &mut self.early {
            if e.peer() == Some(peer) {
                e.orphan();
            }
        }
        for (from, _) in self.waiting.values_mut().flatten() {
            if *from == Some(peer) {
                *from = None;
            }
        }
        let froms = self.unverified.iter_mut().map(|(from, _)| from);
        for from in froms.chain(self.candidate_from.iter_mut().map(|(from, _)| from)) {
            if *from == Some(peer) {
                *from = None;
            }
        }
        if self.requested.is_some_and(|r| r.peer == peer) {
            self.requested = None;
            self.demote(peer, now);
        }
        if usize::from(peer) < self.rules.set.len() {
            if let Some(c) = self.claims.get_mut(&peer) {
                c.window = 0;
                c.gone = true;
            }
        } else {
            self.claims.remove(&peer);
        }
        self.next_work(now, &mut out);
        out
    }

    fn on_tip(&mut self, peer: PeerIndex, window: u64, member: bool, now: Instant) {
        let c = self.claims.entry(peer).or_default();
        match c.demoted_until {
            Some(until) if now < until => {}
            _ => {
                c.demoted_until = None;
                c.window = window;
                c.member = member;
                c.gone = false;
            }
        }
    }

    fn on_proposals(
        &mut self,
        peer: PeerIndex,
        ps: Vec<Proposal>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let answering = self
            .requested
            .is_some_and(|r| r.peer == peer && r.proposals);
        if answering {
            self.pace.charge(ps.iter().map(weight).sum(), now);
        }
        // A known maker's signature that fails costs a check each and is
        // no offence (an honest server may hold such a proposal on its
        // Cement's word): so the first one ends the message, and one in
        // proposals sent unasked (an honest peer sends none, bar a late
        // answer) demotes the sender, whose unasked proposals are then
        // not read until that demotion ends. A source gets one failed
        // check per demotion, however much it sends. (A late answer from
        // a peer demoted for its slowness is read: it may be what catch-up
        // needs.)
        if !answering
            && self
                .claims
                .get(&peer)
                .and_then(|c| c.unread_until)
                .is_some_and(|until| now < until)
        {
            return;
        }
        // An answer is useful when it makes the run of linked proposals
        // longer: a peer answering with proposals that link onto nothing
        // held (junk, for a claim it cannot back) is demoted like one that
        // sends nothing.
        let before = answering.then(|| self.linked_run().0);
        for p in ps {
            let n = out.len();
            self.admit(Some(peer), p, out);
            let forged = out[n..].iter().any(|a| {
                matches!(
                    a,
                    Action::Rejected {
                        reason: Reject::BadMakerSignature,
                        ..
                    }
                )
            });
            if forged {
                if !answering {
                    self.demote(peer, now);
                    let c = self.claims.entry(peer).or_default();
                    c.unread_until = c.demoted_until;
                }
                break;
            }
        }
        if let Some((before, r)) = before.zip(self.requested) {
            self.requested = None;
            let after = self.linked_run().0;
            if after <= before {
                self.demote(peer, now);
            } else {
                let c = self.claims.entry(peer).or_default();
                c.strikes = 0;
                c.rate = Some(answer_rate(
                    after - before,
                    now.saturating_duration_since(r.at),
                ));
            }
        }
    }

    /// Periodic: demotes the peer of a request unanswered for
    /// [`REQUEST_TIMEOUT`], sends a Beacon when one is due.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        if let Some(r) = self.requested {
            if now.saturating_duration_since(r.at) >= REQUEST_TIMEOUT {
                self.requested = None;
                self.demote(r.peer, now);
            }
        }
        self.beacon(now, &mut out);
        // Values still waiting for their bundle: ask again once the last
        // ask timed out.
        if let Some(live) = self.live.as_mut() {
            if !live.blocked.is_empty()
                && live
                    .asked_bundle
                    .is_none_or(|t| now.saturating_duration_since(t) >= REQUEST_TIMEOUT)
            {
                let blocked = std::mem::take(&mut live.blocked);
                live.to_validate.extend(blocked);
            }
        }
        // The round's proposer silent for a window (no Propose, no Beacon):
        // the next rank evaluates now, so it proposes the moment the round
        // changes instead of evaluating after it (failover within the
        // timeout and about one window, SPEC 9.7).
        if let Some(live) = self.live.as_ref() {
            let round = live.agreement.round();
            if self.keys.is_some()
                && live.agreement.proposer(round.saturating_add(1)) == self.me
                && live.agreement.proposer(round) != self.me
                && !live.proposed_rounds.contains(&round)
                && now.saturating_duration_since(live.heard) >= self.rules.window
                && self.evaluating.is_none()
            {
                let window = live.window;
                self.evaluate(window, &mut out);
            }
        }
        // A proposal held back by --min-window-secs whose time is up.
        let paced = self.live.as_ref().and_then(|l| {
            let round = l.agreement.round();
            (l.want_propose == Some(round)
                && now >= l.since + self.min_window
                && self.known_checkpoints(l.window).is_some())
            .then_some(round)
        });
        if let Some(round) = paced {
            if !self.min_window.is_zero() {
                let mut more = Vec::new();
                self.propose(round, None, now, &mut out, &mut more);
                self.drive(more, now, &mut out);
            }
        }
        // An evaluation this node owes a proposal failed (a backend error
        // or panic): try again, at most once per tick.
        if let Some(live) = self.live.as_ref() {
            if live.want_propose == Some(live.agreement.round()) && self.evaluating.is_none() {
                let window = live.window;
                self.evaluate(window, &mut out);
            }
        }
        let mut resent = false;
        if let Some(live) = self.live.as_mut() {
            if now.saturating_duration_since(live.last_resend) >= RESEND_EVERY {
                live.last_resend = now;
                resent = true;
                let round = live.agreement.round();
                live.my_propose.retain(|m| match m {
                    Message::Propose(p) => p.key.round == round,
                    _ => true,
                });
                if live
                    .my_propose
                    .iter()
                    .any(|m| matches!(m, Message::Propose(_)))
                {
                    for m in &live.my_propose {
                        out.push(Action::Send {
                            to: None,
                            msg: m.clone(),
                        });
                    }
                }
                for v in &live.mine {
                    out.push(Action::Send {
                        to: None,
                        msg: Message::Vote(Box::new(v.clone())),
                    });
                }
            }
        }
        // With a valid value: its proof of lock again, so that nodes which
        // missed those prevotes (a restart loses them) can prevote it when
        // it is proposed again; without it two locked nodes and two that
        // never saw the quorum would wait on each other for ever.
        if resent {
            for v in self.proof_of_lock() {
                out.push(Action::Send {
                    to: None,
                    msg: Message::Vote(Box::new(v)),
                });
            }
        }
        self.next_work(now, &mut out);
        out
    }

    /// A timer armed by [`Action::Arm`] fired.
    pub fn on_timeout(
        &mut self,
        window: u64,
        timer: Timeout,
        round: u32,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        if let Some(live) = self.live.as_mut().filter(|l| l.window == window) {
            let mut outs = Vec::new();
            live.agreement.on_timeout(timer, round, &mut outs);
            self.drive(outs, now, &mut out);
        }
        self.next_work(now, &mut out);
        out
    }

    // ---- the live window ----------------------------------------------

    fn open_window(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.live = None;
        let window = self.tip.window + 1;
        if !self.started || self.stopped || self.past_last_window(window) {
            return;
        }
        let set = self.state.active().clone();
        let order = self
            .rules
            .failover_order(&set, window, &self.tip.t, self.tip_proposer);
        let me = self.is_member().then_some(self.me);
        let mut agreement = Agreement::new(set, self.rules.quorum, order, me);
        let outs = match self.signed.filter(|s| s.window == window) {
            Some(s) => agreement.start_at(s.round.saturating_add(1), s.locked),
            None => agreement.start(),
        };
        self.live = Some(Live {
            window,
            agreement,
            since: now,
            values: HashMap::new(),
            round_of: HashMap::new(),
            own: None,
            proposed_rounds: HashSet::new(),
            to_validate: VecDeque::new(),
            blocked: Vec::new(),
            verifying: None,
            votes: HashMap::new(),
            conflicting: HashMap::new(),
            precommits: HashMap::new(),
            prevotes: HashMap::new(),
            want_propose: None,
            last_beacon: None,
            beacons: None,
            heard: now,
            asked_bundle: None,
            mine: Vec::new(),
            my_propose: Vec::new(),
            last_resend: now,
        });
        self.known.retain(|(w, _)| *w >= window);
        self.drive(outs, now, out);
        for (_, e) in std::mem::take(&mut self.early) {
            match e {
                Early::Propose(p, m) => self.on_propose(p, m, now, out),
                Early::Vote(p, v) => self.on_vote(p, v, now, out),
                Early::Beacon(p, b) => self.on_beacon(p, b, out),
            }
        }
    }

    /// Keeps a message for the next window (or this one before its
    /// agreement started) for when that agreement starts, counted then.
    /// It is forwarded now only if its signature checks against the set
    /// after the tip ([`Chain::passing`]); one with a bad signature is
    /// neither kept nor forwarded, one by a signer outside that set (a
    /// member from the next window on, or nobody) is kept but not
    /// forwarded. A copy of one held is not held twice (resends every 2 s
    /// would fill a peer's share with copies and keep its later rounds
    /// out). When [`MAX_FUTURE`] are held, a peer holding fewer than the
    /// peer holding most takes the place of that peer's latest: a peer
    /// filling the room with junk keeps at most its share, not the room.
    fn keep_early(&mut self, peer: Option<PeerIndex>, e: Early, out: &mut Vec<Action>) {
        let digest = e.digest();
        if self.passing(peer, &e, digest, false, out) == Passing::Drop
            || self.early.iter().any(|(d, _)| *d == digest)
        {
            return;
        }
        if self.early.len() >= MAX_FUTURE {
            let held: Vec<Option<PeerIndex>> = self.early.iter().map(|(_, e)| e.peer()).collect();
            let Some(i) = fair_share(&held, e.peer()) else {
                return;
            };
            self.early.remove(i);
        }
        self.early.push((digest, e));
    }

    /// Carries out the agreement's outputs (which may produce more).
    fn drive(&mut self, outs: Vec<Output>, now: Instant, out: &mut Vec<Action>) {
        let mut queue: VecDeque<Output> = outs.into();
        while let Some(o) = queue.pop_front() {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            let window = live.window;
            match o {
                Output::Round(_) => {
                    live.want_propose = None;
                    live.heard = now;
                }
                Output::Arm { timer, round } => {
                    let after = match timer {
                        Timeout::Propose => self.rules.proposer_timeout,
                        _ => self.rules.step_timeout(round),
                    };
                    out.push(Action::Arm {
                        window,
                        timer,
                        round,
                        after,
                    });
                }
                Output::Validate { value, .. } => {
                    live.to_validate.push_back(value);
                }
                Output::Propose { round, value } => {
                    let mut more = Vec::new();
                    self.propose(round, value, now, out, &mut more);
                    queue.extend(more);
                }
                Output::Vote { kind, round, value } => {
                    let mut more = Vec::new();
                    self.sign_vote(kind, round, value, out, &mut more);
                    queue.extend(more);
                }
                Output::Decide {
                    value,
                    round,
                    signers,
                } => {
                    self.decide(value, round, &signers, now, out);
                    return;
                }
            }
        }
        self.validate_next(out);
    }

    /// Records `step` as signed (the node persists it before sending);
    /// false if it is not above the highest signed step.
    fn may_sign(&mut self, window: u64, round: u32, step: u8, out: &mut Vec<Action>) -> bool {
        if let Some(s) = self.signed {
            if (window, round, step) <= (s.window, s.round, s.step) {
                return false;
            }
        }
        let locked = self.live.as_ref().and_then(|l| l.agreement.locked());
        let s = Signed {
            window,
            round,
            step,
            locked,
        };
        self.signed = Some(s);
        out.push(Action::Persist(s));
        true
    }

    fn sign_vote(
        &mut self,
        kind: VoteKind,
        round: u32,
        value: Option<Hash32>,
        out: &mut Vec<Action>,
        more: &mut Vec<Output>,
    ) {
        let Some(keys) = self.keys.clone() else {
            return;
        };
        let window = self.tip.window + 1;
        let step = match kind {
            VoteKind::Prevote => 1,
            VoteKind::Precommit => 2,
        };
        if !self.may_sign(window, round, step, out) {
            return;
        }
        let key = VoteKey {
            kind,
            network_id: self.rules.network_id,
            window,
            round,
            value,
            signer: self.me,
        };
        let vote = Vote::sign(key, &keys);
        out.push(Action::Send {
            to: None,
            msg: Message::Vote(Box::new(vote.clone())),
        });
        if let Some(live) = self.live.as_mut() {
            // The latest prevote and precommit are what a late node needs.
            live.mine.retain(|v| v.key.kind != kind);
            live.mine.push(vote.clone());
        }
        let _ = self.count_vote(vote, more);
    }

    /// Counts a checked vote in the live agreement.
    fn count_vote(&mut self, vote: Vote, more: &mut Vec<Output>) -> Result<(), &'static str> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let k = vote.key;
        live.agreement
            .on_vote(
                VoteIn {
                    kind: k.kind,
                    round: k.round,
                    value: k.value,
                    signer: k.signer,
                },
                more,
            )
            .map_err(|e| e.kind())?;
        live.votes.insert(k, sig_prefix(&vote.signature));
        match (k.kind, k.value) {
            (VoteKind::Precommit, Some(v)) => {
                live.precommits.entry((k.round, v)).or_default().push(vote);
            }
            (VoteKind::Prevote, Some(v)) => {
                live.prevotes.entry((k.round, v)).or_default().push(vote);
                let floor = live.agreement.round().saturating_sub(1);
                let keep = live.agreement.valid().map(|(_, vr)| vr);
                live.prevotes
                    .retain(|(r, _), _| *r >= floor || Some(*r) == keep);
            }
            _ => {}
        }
        Ok(())
    }

    /// The prevotes of a quorum for this node's valid value in its valid
    /// round (the proof of lock), if it holds them.
    fn proof_of_lock(&self) -> Vec<Vote> {
        let Some(live) = self.live.as_ref() else {
            return Vec::new();
        };
        live.agreement
            .valid()
            .and_then(|(v, vr)| live.prevotes.get(&(vr, v)))
            .cloned()
            .unwrap_or_default()
    }

    /// The checkpoints of `window`, if this node has them.
    fn known_checkpoints(&self, window: u64) -> Option<&Vec<Hash32>> {
        self.known
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, c)| c)
    }

    fn remember(&mut self, window: u64, checkpoints: Vec<Hash32>) {
        if self.known_checkpoints(window).is_none() {
            self.known.push((window, checkpoints));
            self.known.sort_by_key(|(w, _)| *w);
            while self.known.len() > 2 {
                self.known.remove(0);
            }
        }
    }

    /// The basis of a new proposal for the live window: link, bundle and
    /// the state root after paying the tip window with it.
    fn basis(&self) -> Option<Basis> {
        let window = self.tip.window + 1;
        let (bundle, root) = if self.tip.window == 0 {
            ([0; 32], self.root)
        } else {
            let c = self.bundles.first()?;
            (self.bundles.first_hash()?.0, self.root_after(c)?)
        };
        Some(Basis {
            window,
            link: self.tip.hash,
            bundle,
            state_root: root,
        })
    }

    /// The changes of settling the tip window with bundle `c` (its
    /// emission, its candidates and members, SPEC 9.6 and 9.9), and the
    /// state root after (an overlay: the accounts are not copied).
    fn state_after(&self, c: Option<&Cement>) -> Option<(Changes, Hash32)> {
        let mut o = self.state.overlay();
        if self.tip.window > 0 {
            let signers: Vec<NodeId> = c?.precommits.iter().map(|(id, _)| *id).collect();
            o.settle(&Settle {
                emission: self.rules.emission,
                joining: &self.rules.joining,
                window: self.tip.window,
                proposer: self.tip_proposer,
                signers: &signers,
                extras: &self.tip_extras,
            })
            .ok()?;
        }
        let root = o.root();
        Some((o.into_changes(), root))
    }

    /// The roster after settling the tip window with `changes`.
    fn roster_after<'a>(&'a self, changes: &'a Changes) -> &'a Roster {
        changes.roster.as_ref().unwrap_or(self.state.roster())
    }

    /// The accounts paid when the window after the tip is cemented.
    fn paid(&self, bundle: Option<&Cement>) -> Vec<NodeId> {
        if self.tip.window == 0 {
            return Vec::new();
        }
        let mut v = vec![self.tip_proposer];
        if let Some(c) = bundle {
            v.extend(c.precommits.iter().map(|(id, _)| *id));
        }
        v
    }

    fn root_after(&self, c: &Cement) -> Option<Hash32> {
        self.state_after(Some(c)).map(|(_, root)| root)
    }

    fn propose(
        &mut self,
        round: u32,
        value: Option<(Hash32, u32)>,
        now: Instant,
        out: &mut Vec<Action>,
        more: &mut Vec<Output>,
    ) {
        let Some(keys) = self.keys.clone() else {
            return;
        };
        let window = self.tip.window + 1;
        let (proposal, valid_round) = match value {
            Some((v, vr)) => match self.live.as_ref().and_then(|l| l.values.get(&v)) {
                Some((_, p)) => (p.clone(), Some(vr)),
                None => return,
            },
            None if self
                .live
                .as_ref()
                .and_then(|l| l.own.filter(|v| l.values.contains_key(v)))
                .is_some() =>
            {
                let live = self.live.as_ref().expect("checked");
                let v = live.own.expect("checked");
                (live.values[&v].1.clone(), None)
            }
            None => {
                let (Some(cps), Some(basis)) =
                    (self.known_checkpoints(window).cloned(), self.basis())
                else {
                    // Evaluate first (beacons meanwhile), propose when done.
                    if let Some(live) = self.live.as_mut() {
                        live.want_propose = Some(round);
                    }
                    self.evaluate(window, out);
                    self.beacon(now, out);
                    return;
                };
                (
                    Proposal::sign_with(
                        &keys,
                        self.rules.suite,
                        self.rules.d,
                        basis,
                        cps,
                        self.pick_extras(),
                    ),
                    None,
                )
            }
        };
        if let Some(live) = self.live.as_mut() {
            if now < live.since + self.min_window {
                // Ready, but paced: on_tick proposes once the time is up.
                live.want_propose = Some(round);
                return;
            }
        }
        if !self.may_sign(window, round, 0, out) {
            return;
        }
        let value = Hash32(proposal.hash());
        let m = Propose::sign(
            ProposeKey {
                network_id: self.rules.network_id,
                window,
                round,
                valid_round,
                value,
                signer: self.me,
            },
            proposal.clone(),
            &keys,
        );
        // The bundle the proposal names goes first, so that everyone can
        // check the state root.
        let mut sent = Vec::new();
        if let Some(c) = self
            .bundles
            .first()
            .filter(|_| self.bundles.first_hash().map(|h| h.0) == Some(proposal.header.bundle))
        {
            sent.push(Message::Cement(Box::new(c.clone())));
        }
        sent.push(Message::Propose(Box::new(m)));
        if valid_round.is_some() {
            // A re-proposal: with the prevotes that made the value valid,
            // for the nodes that did not see them.
            sent.extend(
                self.proof_of_lock()
                    .into_iter()
                    .map(|v| Message::Vote(Box::new(v))),
            );
        }
        for msg in &sent {
            out.push(Action::Send {
                to: None,
                msg: msg.clone(),
            });
        }
        let live = self.live.as_mut().expect("proposing in a live window");
        // Owed no more: no beacons for this round.
        if live.want_propose == Some(round) {
            live.want_propose = None;
        }
        live.my_propose = sent;
        if valid_round.is_none() {
            live.own = Some(value);
        }
        let maker = proposal.header.proposer;
        Self::hold_value(live, value, round, None, proposal);
        live.proposed_rounds.insert(round);
        live.agreement
            .on_proposal(round, value, valid_round, self.me, more);
        // This node is rank 0 of the next window if its value is decided
        // and the next window does not hand over (a re-proposal of another
        // member's value makes that member rank 0).
        if maker == self.me && !hands_over(window + 1, self.rules.joining.tenure()) {
            self.evaluate(window + 1, out);
        } else {
            self.handover_work(out);
        }
    }

    /// Where the window after the live one hands rank 0 over (SPEC 9.1),
    /// the first two members of its order by hash start on its T as soon
    /// as T of the live window is known (evaluated, or a proposal for it
    /// verified) and nothing else is being evaluated, rather than once the
    /// live window is cemented: rank 0 proposes about a verification later
    /// than a maker would have, and rank 1 is ready if rank 0 is a member
    /// gone silent (members stay in the set for `inactive_windows`). The
    /// order is judged with the set after the tip settled with this node's
    /// bundle (the set that will vote on that window but where another
    /// bundle is canonical and changes who leaves): a wrong guess costs
    /// only work, and the checkpoints serve whoever proposes.
    fn handover_work(&mut self, out: &mut Vec<Action>) {
        let live = self.tip.window + 1;
        let next = live + 1;
        if self.keys.is_none()
            || self.evaluating.is_some()
            || !hands_over(next, self.rules.joining.tenure())
            || self.known_checkpoints(next).is_some()
        {
            return;
        }
        let Some(t) = self.known_checkpoints(live).and_then(|c| c.last()).copied() else {
            return;
        };
        let changes = self
            .bundles
            .first()
            .filter(|_| self.tip.window > 0)
            .and_then(|c| self.state_after(Some(c)))
            .map(|(c, _)| c)
            .unwrap_or_default();
        let set = &self.roster_after(&changes).active;
        if set
            .failover_order(&t, None)
            .iter()
            .take(2)
            .any(|id| *id == self.me)
        {
            self.evaluate(next, out);
        }
    }

    /// Starts evaluating `window` when T(window-1) is known and nothing is
    /// being evaluated.
    fn evaluate(&mut self, window: u64, out: &mut Vec<Action>) {
        if self.evaluating.is_some()
            || self.known_checkpoints(window).is_some()
            || self.past_last_window(window)
        {
            return;
        }
        let start = if window == self.tip.window + 1 {
            self.tip.t
        } else if window == self.tip.window + 2 {
            match self.known_checkpoints(window - 1) {
                Some(c) => *c.last().expect("K >= 1"),
                None => return,
            }
        } else {
            return;
        };
        self.evaluating = Some(window);
        out.push(Action::Evaluate { window, start });
    }

    /// A Beacon while this node owes the live round a proposal.
    fn beacon(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(keys) = self.keys.clone() else {
            return;
        };
        let half = self.rules.window / 2;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let round = live.agreement.round();
        // A round this node already voted in is one it can no longer
        // propose in: no Beacon then (it would hold the others back).
        let voted = self
            .signed
            .is_some_and(|s| s.window == live.window && s.round == round && s.step > 0);
        if live.want_propose != Some(round)
            || voted
            || live
                .last_beacon
                .is_some_and(|t| now.saturating_duration_since(t) < half)
        {
            return;
        }
        live.last_beacon = Some(now);
        let b = Beacon::sign(self.rules.network_id, live.window, round, &keys);
        out.push(Action::Send {
            to: None,
            msg: Message::Beacon(Box::new(b)),
        });
    }

    /// The result of an [`Action::Evaluate`]: K checkpoints of `window`.
    pub fn on_evaluated(
        &mut self,
        window: u64,
        checkpoints: Vec<Hash32>,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        let mut out = Vec::new();
        self.evaluating = None;
        if window > self.tip.window && checkpoints.len() == self.rules.checkpoints as usize {
            self.remember(window, checkpoints);
            if window == self.tip.window + 1 {
                self.mark_applied(window, &mut out);
            }
            let owed = self
                .live
                .as_ref()
                .filter(|l| l.window == window)
                .and_then(|l| l.want_propose.filter(|r| *r == l.agreement.round()));
            if let Some(round) = owed {
                let mut more = Vec::new();
                self.propose(round, None, now, &mut out, &mut more);
                self.drive(more, now, &mut out);
            }
        }
        // Free again: a handover may be waiting for it.
        self.handover_work(&mut out);
        self.next_work(now, &mut out);
        out
    }

    /// An evaluation that did not finish (cancelled or failed). If a
    /// proposal still waits on it, the next [`Chain::on_tick`] starts it
    /// again.
    pub fn on_evaluation_failed(&mut self) {
        self.evaluating = None;
    }

    fn mark_applied(&mut self, window: u64, out: &mut Vec<Action>) {
        if self.applied.is_none() && window == self.tip.window + 1 {
            if let Some(t) = self
                .known_checkpoints(window)
                .and_then(|c| c.last())
                .copied()
            {
                self.applied = Some((window, t));
                out.push(Action::Applied { window, t });
                self.candidate_work(out);
                self.verify_candidates(out);
                self.handover_work(out);
            }
        }
    }

    fn on_propose(
        &mut self,
        peer: Option<PeerIndex>,
        m: Box<Propose>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let k = m.key;
        let window = self.tip.window + 1;
        if k.network_id != self.rules.network_id {
            return self.reject(peer, k.window, Reject::WrongNetwork, out);
        }
        if k.window == window + 1 || (k.window == window && self.live.is_none()) {
            // For the next window, or this one before the agreement started.
            return self.keep_early(peer, Early::Propose(peer, m), out);
        }
        let Some(live) = self.live.as_ref().filter(|l| l.window == k.window) else {
            // Late, or far ahead (fetched when its turn comes).
            return self.unchecked(peer, Early::Propose(peer, m), out);
        };
        if k.round > live.agreement.round().saturating_add(MAX_ROUNDS_AHEAD)
            || live.proposed_rounds.contains(&k.round)
        {
            return;
        }
        if live.agreement.proposer(k.round) != k.signer {
            return self.reject(peer, k.window, Reject::WrongProposer, out);
        }
        let h = &m.proposal.header;
        if let Err(r) = self.cheap_checks(&m.proposal) {
            return self.reject(peer, k.window, r, out);
        }
        // A new value (no valid round) is made by the round's proposer
        // itself (SPEC 9.7): one leader cannot put another member's
        // proposal forward as its own (and make it rank 0 of the next
        // window).
        if self.state.active().index_of(&h.proposer).is_none()
            || (k.valid_round.is_none() && h.proposer != k.signer)
        {
            return self.reject(peer, k.window, Reject::WrongProposer, out);
        }
        if h.link != self.tip.hash {
            return self.reject(peer, k.window, Reject::WrongPrevious, out);
        }
        self.signature_checks += 2;
        let set = self.state.active();
        if !m.signed_in(set) {
            return self.reject(peer, k.window, Reject::BadSignature, out);
        }
        if !Self::proposal_signed(set, &m.proposal) {
            return self.reject(peer, k.window, Reject::BadMakerSignature, out);
        }
        if let Some(peer) = peer {
            self.claims.entry(peer).or_default();
        }
        let live = self.live.as_mut().expect("checked above");
        if !Self::hold_value(live, k.value, k.round, peer, m.proposal.clone()) {
            // No room: the round stays open to its Propose sent again.
            return;
        }
        live.proposed_rounds.insert(k.round);
        if k.round == live.agreement.round() {
            live.heard = now;
        }
        let mut more = Vec::new();
        live.agreement
            .on_proposal(k.round, k.value, k.valid_round, k.signer, &mut more);
        self.drive(more, now, out);
    }

    /// Holds a proposal for the live window. When [`MAX_VALUES`] are held,
    /// the one proposed furthest from the current round goes (rounds ahead
    /// by distance, then rounds gone by, oldest first), unless it is this
    /// node's lock or its own proposal; a new one further than all those
    /// is not held. A Propose carries the whole proposal, so a value
    /// proposed again comes back (an honest proposer sends its Propose
    /// again while its round lasts), and its verdict is kept by the
    /// agreement (a value pushed out before it was judged is forgotten
    /// there, and validated again when it comes back); a member proposing
    /// for many rounds ahead cannot push out the current round's value.
    /// Whether the value is held.
    fn hold_value(
        live: &mut Live,
        v: Hash32,
        round: u32,
        peer: Option<PeerIndex>,
        p: Proposal,
    ) -> bool {
        let r = live.round_of.entry(v).or_insert(round);
        *r = (*r).max(round);
        if live.values.contains_key(&v) {
            return true;
        }
        if live.values.len() >= MAX_VALUES {
            let current = live.agreement.round();
            let distance = |r: u32| {
                if r >= current {
                    u64::from(r - current)
                } else {
                    u64::from(MAX_ROUNDS_AHEAD) + u64::from(current - r)
                }
            };
            let keep = [
                live.agreement.locked().map(|l| l.0),
                live.agreement.valid().map(|v| v.0),
                live.own,
            ];
            let furthest = live
                .values
                .keys()
                .filter(|x| !keep.contains(&Some(**x)))
                .map(|x| (*x, distance(live.round_of.get(x).copied().unwrap_or(0))))
                .max_by_key(|&(_, d)| d)
                .filter(|&(_, d)| d > distance(round))
                .map(|(x, _)| x);
            match furthest {
                Some(o) => {
                    live.values.remove(&o);
                    live.round_of.remove(&o);
                    live.to_validate.retain(|x| *x != o);
                    live.blocked.retain(|x| *x != o);
                    if live.verifying != Some(o) {
                        live.agreement.forget_pending(&o);
                    }
                }
                None => {
                    live.round_of.remove(&v);
                    return false;
                }
            }
        }
        live.values.insert(v, (peer, p));
        true
    }

    /// Parameters, window and maker, before any signature.
    fn cheap_checks(&self, p: &Proposal) -> Result<(), Reject> {
        let h = &p.header;
        let r = &self.rules;
        if h.suite != r.suite || h.d != r.d || h.checkpoints != r.checkpoints {
            return Err(Reject::WrongParams(format!(
                "{}/D={}/K={}",
                h.suite, h.d, h.checkpoints
            )));
        }
        if p.extras.proofs.len() > r.joining.proofs_per_proposal(r.d) {
            return Err(Reject::Candidate("candidate_too_many"));
        }
        Ok(())
    }

    /// Whether the maker of `p`, a member of `set`, signed it.
    fn proposal_signed(set: &ActiveSet, p: &Proposal) -> bool {
        set.get(&p.header.proposer)
            .is_some_and(|m| p.signed_by(&m.key))
    }

    /// Validates the next value waiting, if the verifier is free.
    fn validate_next(&mut self, out: &mut Vec<Action>) {
        loop {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            if live.verifying.is_some() || self.verifying {
                return;
            }
            let Some(v) = live.to_validate.pop_front() else {
                return;
            };
            let Some((peer, p)) = live.values.get(&v).cloned() else {
                continue;
            };
            match self.check_value(&p) {
                Err(None) => {
                    // The bundle it names has not arrived: ask its sender
                    // (at most once per request timeout), and go on with
                    // the other values (it waits at the back, and is taken
                    // again when a Cement arrives).
                    let now = self.clock;
                    let live = self.live.as_mut().expect("live");
                    live.blocked.push(v);
                    if live
                        .asked_bundle
                        .is_some_and(|t| now.saturating_duration_since(t) < REQUEST_TIMEOUT)
                    {
                        continue;
                    }
                    live.asked_bundle = Some(now);
                    if let Some(peer) = peer {
                        out.push(Action::Send {
                            to: Some(peer),
                            msg: Message::GetCements {
                                from: self.tip.window,
                                count: 1,
                            },
                        });
                    }
                    continue;
                }
                Err(Some(reason)) => {
                    self.reject(peer, p.window(), reason, out);
                    self.validated(v, false, self.clock, out);
                }
                Ok(candidates) => {
                    let window = p.window();
                    // T is the same whoever evaluates it: checkpoints this
                    // node has verified (or made) need no second look, only
                    // the candidates' chains it has not verified yet.
                    // And once T is known, other checkpoints are wrong:
                    // refused without a VDF check (a round leader may
                    // propose for every round it leads, 64 ahead).
                    let mismatch = self.known_checkpoints(window).and_then(|c| {
                        (crate::proposal::checkpoints_hash(c) != p.header.checkpoints_hash)
                            .then(|| c.iter().zip(&p.checkpoints).position(|(a, b)| a != b))
                    });
                    if let Some(segment) = mismatch {
                        let segment = segment.unwrap_or(0);
                        self.reject(peer, window, Reject::BadCheckpoint { segment }, out);
                        self.validated(v, false, self.clock, out);
                        continue;
                    }
                    let known = self.known_checkpoints(window).is_some();
                    if known && candidates.is_empty() {
                        self.validated(v, true, self.clock, out);
                        continue;
                    }
                    let live = self.live.as_mut().expect("live");
                    live.verifying = Some(v);
                    self.verifying = true;
                    out.push(Action::Verify(Batch {
                        from: peer,
                        proofs: if known {
                            Vec::new()
                        } else {
                            vec![p.proof(self.tip.t)]
                        },
                        proposals: vec![p],
                        cements: Vec::new(),
                        prev_bundle: None,
                        sets: Vec::new(),
                        prev_set: None,
                        candidates,
                        bad_cement: None,
                    }));
                    return;
                }
            }
        }
    }

    /// The checks of a value that need no VDF work; the chains of the
    /// candidate proofs it carries, to verify with it. `Err(None)`: its
    /// bundle is not here yet.
    fn check_value(&self, p: &Proposal) -> Result<Vec<Proof>, Option<Reject>> {
        let h = &p.header;
        let window = self.tip.window + 1;
        if h.window != window {
            return Err(Some(Reject::WrongWindow {
                expected: window,
                got: h.window,
            }));
        }
        if h.link != self.tip.hash {
            return Err(Some(Reject::WrongPrevious));
        }
        let (changes, expected) = if self.tip.window == 0 {
            (Changes::default(), self.root)
        } else {
            let c = self.bundles.find(&h.bundle).ok_or(None)?;
            self.state_after(Some(c))
                .ok_or(Some(Reject::UnknownBundle))?
        };
        if expected != h.state_root {
            return Err(Some(Reject::WrongStateRoot {
                expected,
                got: h.state_root,
            }));
        }
        self.check_extras(p, self.roster_after(&changes))
            .map_err(Some)
    }

    /// Checks what `p` (for the window after the tip) carries against the
    /// roster it commits to (SPEC 9.9): each candidate proof for one of the
    /// two windows before, by a non-member not registered, above the last
    /// window counted for it, of the genesis shape, signed by its key; the
    /// registration by a candidate whose count is reached, not registered
    /// yet, signed by the key of its entry. Returns the proofs' chains.
    fn check_extras(&self, p: &Proposal, roster: &Roster) -> Result<Vec<Proof>, Reject> {
        let h = p.window();
        let e = &p.extras;
        let j = &self.rules.joining;
        if e.proofs.len() > j.proofs_per_proposal(self.rules.d) {
            return Err(Reject::Candidate("candidate_too_many"));
        }
        let mut chains = Vec::with_capacity(e.proofs.len());
        for c in &e.proofs {
            let t = self.candidate_t(c.window, h)?;
            self.check_candidate(c, roster)?;
            let chain = c
                .proof(self.rules.suite, j, &t)
                .ok_or(Reject::Candidate("candidate_wrong_params"))?;
            // A chain this node verified when it was gossiped needs no
            // second verification.
            if self
                .pool
                .get(&c.key())
                .is_none_or(|x| x.checkpoints != c.checkpoints)
            {
                chains.push(chain);
            }
        }
        if let Some(g) = &e.registration {
            let carried: Vec<&CandidateProof> = e.proofs.iter().collect();
            self.check_registration(g, roster, &carried, 0)?;
        }
        Ok(chains)
    }

    /// T of `window`, whose candidate proofs the proposal of window `h`
    /// may carry (`h - 1` or `h - 2`); `candidate_late` otherwise.
    fn candidate_t(&self, window: u64, h: u64) -> Result<Hash32, Reject> {
        // (Subtraction from h: a peer's window may be 2^64-1.)
        if h == self.tip.window + 1 && h.checked_sub(1) == Some(window) {
            Ok(self.tip.t)
        } else if h == self.tip.window + 1 && h.checked_sub(2) == Some(window) {
            // Unknown right after a snapshot install: such a proof cannot
            // be judged here, and counts as late (for that one window).
            self.prev_t.ok_or(Reject::Candidate("candidate_late"))
        } else {
            Err(Reject::Candidate("candidate_late"))
        }
    }

    /// The checks of a candidate proof against `roster` (no VDF work).
    fn check_candidate(&self, c: &CandidateProof, roster: &Roster) -> Result<(), Reject> {
        if c.network_id != self.rules.network_id {
            return Err(Reject::Candidate("candidate_wrong_network"));
        }
        if c.suite != self.rules.suite
            || c.checkpoints.len() != self.rules.joining.candidate_k as usize
        {
            return Err(Reject::Candidate("candidate_wrong_params"));
        }
        if roster.active.index_of(&c.id).is_some() {
            return Err(Reject::Candidate("candidate_member"));
        }
        if let Some(x) = roster.candidates.get(&c.id) {
            if x.effective.is_some() {
                return Err(Reject::Candidate("candidate_registered"));
            }
            if x.count > 0 && c.window <= x.last {
                return Err(Reject::Candidate("candidate_counted"));
            }
        }
        if !c.signed() {
            return Err(Reject::Candidate("candidate_bad_signature"));
        }
        Ok(())
    }

    /// A registration against `roster` with `proofs` (ascending windows)
    /// counted first: those the same proposal carries (SPEC 9.9), so a
    /// registration rides with the candidate's last counted proof. `slack`
    /// counts that many proofs still to come (a gossiped registration may
    /// arrive before the proof it rides with).
    fn check_registration(
        &self,
        g: &Registration,
        roster: &Roster,
        proofs: &[&CandidateProof],
        slack: u32,
    ) -> Result<(), Reject> {
        if g.network_id != self.rules.network_id {
            return Err(Reject::Candidate("registration_wrong_network"));
        }
        if roster.active.index_of(&g.id).is_some() {
            return Err(Reject::Candidate("registration_member"));
        }
        let entry = roster.candidates.get(&g.id);
        let carried = proofs.iter().filter(|p| p.id == g.id);
        let Some(key) = entry
            .map(|x| &x.key)
            .or(proofs.iter().find(|p| p.id == g.id).map(|p| &p.key))
        else {
            return Err(Reject::Candidate("registration_unknown"));
        };
        if entry.is_some_and(|x| x.effective.is_some()) {
            return Err(Reject::Candidate("registration_twice"));
        }
        let (mut count, mut last) = entry.map_or((0, 0), |x| (x.count, x.last));
        for p in carried {
            if p.window > last {
                (count, last) = crate::consensus::state::counted(count, last, p.window);
            }
        }
        if count.saturating_add(slack) < self.rules.joining.candidate_windows {
            return Err(Reject::Candidate("registration_early"));
        }
        if !g.signed_by(key) {
            return Err(Reject::Candidate("registration_bad_signature"));
        }
        Ok(())
    }

    /// The verified proofs of `id` this node holds, ascending windows.
    fn pooled_of(&self, id: &NodeId) -> Vec<&CandidateProof> {
        self.pool
            .iter()
            .filter(|((i, _), _)| i == id)
            .map(|(_, c)| c)
            .collect()
    }

    fn validated(&mut self, v: Hash32, valid: bool, now: Instant, out: &mut Vec<Action>) {
        let mut more = Vec::new();
        if let Some(live) = self.live.as_mut() {
            live.agreement.on_validated(v, valid, &mut more);
        }
        self.drive(more, now, out);
    }

    fn on_vote(
        &mut self,
        peer: Option<PeerIndex>,
        v: Box<Vote>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let k = v.key;
        let window = self.tip.window + 1;
        if k.network_id != self.rules.network_id {
            return self.reject(peer, k.window, Reject::Vote("vote_wrong_network"), out);
        }
        if k.window == window + 1 || (k.window == window && self.live.is_none()) {
            return self.keep_early(peer, Early::Vote(peer, v), out);
        }
        if k.window == 0 || k.window > window.saturating_add(WAITING_HORIZON) {
            // No such window can be voted on.
            return self.reject(peer, k.window, Reject::Vote("vote_wrong_window"), out);
        }
        let Some(live) = self.live.as_ref().filter(|l| l.window == k.window) else {
            // Late (cemented here already) or ahead of this node (it
            // catches up from cements): not counted either way.
            return self.unchecked(peer, Early::Vote(peer, v), out);
        };
        if k.round > live.agreement.round().saturating_add(MAX_ROUNDS_AHEAD) {
            return self.reject(peer, k.window, Reject::Vote("vote_wrong_round"), out);
        }
        if live.agreement.active_set().index_of(&k.signer).is_none() {
            return self.reject(peer, k.window, Reject::Vote("vote_non_member"), out);
        }
        if let Some(prefix) = live.votes.get(&k) {
            // The same vote again: a resend (same bytes) is ignored; a
            // re-signed copy is counted. Neither costs a signature check.
            if *prefix == sig_prefix(&v.signature) {
                return;
            }
            return self.reject(peer, k.window, Reject::Vote("vote_duplicate"), out);
        }
        if live.conflicting.get(&k) == Some(&sig_prefix(&v.signature)) {
            // An equivocation refused already, sent again.
            return self.reject(peer, k.window, Reject::Vote("vote_conflicting"), out);
        }
        self.signature_checks += 1;
        let set = self.live.as_ref().expect("checked").agreement.active_set();
        if v.check(set).is_err() {
            return self.reject(peer, k.window, Reject::Vote("vote_bad_signature"), out);
        }
        let mut more = Vec::new();
        let prefix = sig_prefix(&v.signature);
        if let Err(kind) = self.count_vote(*v, &mut more) {
            let live = self.live.as_mut().expect("checked");
            if kind == "vote_conflicting" && live.conflicting.len() < MAX_CONFLICTING {
                live.conflicting.insert(k, prefix);
            }
            self.reject(peer, k.window, Reject::Vote(kind), out);
        }
        self.drive(more, now, out);
    }

    fn on_beacon(&mut self, peer: Option<PeerIndex>, b: Box<Beacon>, out: &mut Vec<Action>) {
        let window = self.tip.window + 1;
        if b.network_id != self.rules.network_id {
            return self.reject(peer, b.window, Reject::WrongNetwork, out);
        }
        if b.window == window + 1 || (b.window == window && self.live.is_none()) {
            return self.keep_early(peer, Early::Beacon(peer, b), out);
        }
        let Some(live) = self.live.as_ref().filter(|l| l.window == b.window) else {
            return self.unchecked(peer, Early::Beacon(peer, b), out);
        };
        if live.agreement.proposer(b.round) != b.signer || b.round != live.agreement.round() {
            return out.push(Action::Unchecked);
        }
        if let Some((r, first, last)) = live.beacons {
            let now = self.clock;
            if r == b.round
                && (now.saturating_duration_since(last) < self.rules.window / 4
                    || now.saturating_duration_since(first)
                        > self.rules.proposer_timeout * BEACON_EXTENSION)
            {
                return; // a resend, a replay, or a round held long enough
            }
        }
        self.signature_checks += 1;
        if !b.signed_in(live.agreement.active_set()) {
            return self.reject(peer, b.window, Reject::BadSignature, out);
        }
        let live = self.live.as_mut().expect("checked");
        let now = self.clock;
        live.beacons = match live.beacons {
            Some((r, first, _)) if r == b.round => Some((r, first, now)),
            _ => Some((b.round, now, now)),
        };
        live.heard = now;
        let mut outs = Vec::new();
        live.agreement.on_beacon(b.round, b.signer, &mut outs);
        self.drive(outs, self.clock, out);
    }

    fn on_cement(
        &mut self,
        peer: Option<PeerIndex>,
        c: Cement,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if c.network_id != self.rules.network_id {
            return self.reject(peer, c.window, Reject::Cement("cement_wrong_network"), out);
        }
        if c.window < self.tip.window || c.window > self.tip.window + WAITING_HORIZON {
            return out.push(Action::Unchecked);
        }
        // Above the tip: a copy of a held Cement is not checked again, and
        // beyond the live window it is dropped, as is one with no room,
        // before any signature check (the live window's Cement may still
        // decide it).
        let h = c.hash();
        let held = c.window > self.tip.window
            && self
                .waiting_cements
                .get(&c.window)
                .is_some_and(|cs| cs.iter().any(|(x, _)| *x == h));
        if let Some(&(_, kind)) = self.refused_cements.iter().find(|(x, _)| *x == h) {
            // Refused already, sent again: no second check, and no bundle
            // held makes room for it.
            return self.reject(peer, c.window, Reject::Cement(kind), out);
        }
        if c.window > self.tip.window + 1 && self.cement_place(&c, &h).is_none() {
            // A copy of one held goes on (a resend reaches newcomers);
            // one with no room was never checked.
            if !held {
                out.push(Action::Unchecked);
            }
            return;
        }
        if c.window == self.tip.window {
            if c.proposal.0 != self.tip.hash {
                return self.reject(
                    peer,
                    c.window,
                    Reject::CementConflict {
                        ours: self.tip.hash,
                        theirs: c.proposal,
                    },
                    out,
                );
            }
            if self.bundles.contains(&h) {
                return;
            }
            if self.bundles.len() >= MAX_BUNDLES {
                // Full: a bundle gets in only in place of one worth less
                // (never our own, the first); see `bundle_worth`.
                let mine = self.bundle_worth(&h);
                // No room: dropped unchecked, so not forwarded.
                let Some((i, least)) = (1..self.bundles.len())
                    .map(|i| (i, self.bundle_worth(&self.bundles.hash_at(i))))
                    .min_by_key(|&(_, w)| w)
                else {
                    return out.push(Action::Unchecked);
                };
                if least >= mine {
                    return out.push(Action::Unchecked);
                }
                self.bundles.remove(i);
            }
        }
        if held {
            // Checked when it came first.
        } else if let Err(e) = self.check_cement(&c) {
            // The set may have changed since the tip: a Cement that is
            // wrong only for the set after the tip waits to be fetched
            // again, uncounted.
            if c.window > self.tip.window + 1
                && matches!(e.kind(), "cement_non_member" | "bundle_short_of_quorum")
            {
                return out.push(Action::Unchecked);
            }
            if self.refused_cements.len() >= MAX_REFUSED_CEMENTS {
                self.refused_cements.pop_front();
            }
            self.refused_cements.push_back((h, e.kind()));
            return self.reject(peer, c.window, Reject::Cement(e.kind()), out);
        }
        if c.window == self.tip.window {
            // A bundle a waiting proposal may name.
            self.bundles.push(h, c);
            if let Some(live) = self.live.as_mut() {
                let blocked = std::mem::take(&mut live.blocked);
                live.to_validate.extend(blocked);
            }
            self.validate_next(out);
            return;
        }
        if c.window == self.tip.window + 1 {
            // The live window, decided elsewhere: if its proposal is here
            // and valid, that settles it; otherwise catch-up fetches it.
            let decided = self.live.as_ref().and_then(|l| {
                l.values
                    .get(&c.proposal)
                    .map(|(_, p)| p.clone())
                    .filter(|_| l.agreement.is_valid_value(&c.proposal))
            });
            if let Some(p) = decided {
                self.cement_live(p, c, now, out);
                return;
            }
        }
        // Where it goes may have changed while the live window was tried.
        // No room: checked, but not held, so not forwarded (a copy of one
        // held goes on).
        let Some(place) = self.cement_place(&c, &h) else {
            if !held {
                out.push(Action::Unchecked);
            }
            return;
        };
        if place.is_none() {
            // Room in bytes: the highest windows held give way.
            let mut held = self.cement_bytes();
            while held + c.weight() > self.cement_budget {
                match self.waiting_cements.last_key_value() {
                    Some((&top, cs)) if top > c.window => {
                        held -= cs.iter().map(|(_, x)| x.weight()).sum::<usize>();
                        self.waiting_cements.remove(&top);
                    }
                    _ => break,
                }
            }
        }
        let slot = self.waiting_cements.entry(c.window).or_default();
        match place {
            Some(i) => slot[i] = (h, c),
            None => slot.push((h, c)),
        }
    }

    /// A Propose, vote or Beacon for a window without a live agreement
    /// here, dropped: forwarded only when it is for the window just
    /// cemented (a peer still finishing it may need it) and its signature
    /// checks against the set that cemented it ([`Chain::passing`]);
    /// older windows and those beyond the next are not forwarded.
    fn unchecked(&mut self, peer: Option<PeerIndex>, e: Early, out: &mut Vec<Action>) {
        if e.window() != self.tip.window {
            return out.push(Action::Unchecked);
        }
        self.passing(peer, &e, e.digest(), true, out);
    }

    /// Judges a message this node does not count now but may forward (one
    /// for the window just cemented, `late`, or one for the next window):
    /// a well-formed forgery forwarded unchecked would cross the whole
    /// network, every node passing it on, and so would a member's endless
    /// genuine messages for rounds nobody reaches. So:
    /// - late: only votes of rounds up to the one the tip was decided in,
    ///   and only the Propose of the decided value (what a peer still
    ///   finishing the window can use); no Beacons;
    /// - early: rounds up to [`MAX_ROUNDS_AHEAD`];
    /// - a signer outside the set (the tip's set, or the set after the
    ///   tip) is not checked ([`Passing::Hold`]); a bad signature is a
    ///   rejection;
    /// - one message per slot (kind, window, round, signer): the first
    ///   that checks is remembered by digest (up to [`MAX_PASSED`], until
    ///   the next window is cemented), its copies cost no second check,
    ///   and another message for that slot is not forwarded.
    fn passing(
        &mut self,
        peer: Option<PeerIndex>,
        e: &Early,
        digest: [u8; 32],
        late: bool,
        out: &mut Vec<Action>,
    ) -> Passing {
        let needed = if late {
            let decided = self.bundles.first().map(|c| c.round);
            match e {
                Early::Propose(_, m) => m.key.value.0 == self.tip.hash,
                Early::Vote(_, v) => decided.is_some_and(|r| v.key.round <= r),
                Early::Beacon(..) => false,
            }
        } else {
            e.round() <= MAX_ROUNDS_AHEAD
        };
        if !needed {
            out.push(Action::Unchecked);
            return Passing::Drop;
        }
        let set = if late {
            &self.tip_set
        } else {
            self.state.active()
        };
        if set.index_of(&e.signer()).is_none() {
            out.push(Action::Unchecked);
            return Passing::Hold;
        }
        let slot = e.slot();
        match self.passed.get(&slot) {
            Some(d) if *d == digest => return Passing::Genuine,
            Some(_) => {
                out.push(Action::Unchecked);
                return Passing::Hold;
            }
            None => {}
        }
        self.signature_checks += 1;
        if !e.signed_in(set) {
            self.reject(peer, e.window(), e.bad_signature(), out);
            return Passing::Drop;
        }
        if self.passed.len() < MAX_PASSED {
            self.passed.insert(slot, digest);
        }
        Passing::Genuine
    }

    /// A Cement's signatures. The tip's Cements are checked against the
    /// set that cemented it, the live window's against the set after the
    /// tip; for windows further ahead the set after the tip is the best
    /// this node knows (catch-up checks each again against its own
    /// window's set, and a Cement refused here only for that reason is
    /// fetched again).
    ///
    /// A precommit verified here already (the same signer's same bytes in
    /// a held Cement of this window, round and proposal, or among the live
    /// window's precommits) is not verified again: anyone can recombine a
    /// window's relayed precommits, so a Cement of n genuine ones and one
    /// forged (a new one per message) would otherwise cost n checks each.
    fn check_cement(&mut self, c: &Cement) -> Result<(), crate::consensus::vote::CementError> {
        let set = if c.window == self.tip.window {
            &self.tip_set
        } else {
            self.state.active()
        };
        let same = |x: &&Cement| x.round == c.round && x.proposal == c.proposal;
        let tip_bundles = (c.window == self.tip.window).then_some(&self.bundles.0);
        let vouched: Vec<&[(NodeId, Vec<u8>)]> = tip_bundles
            .into_iter()
            .flatten()
            .chain(self.waiting_cements.get(&c.window).into_iter().flatten())
            .map(|(_, x)| x)
            .filter(same)
            .map(|x| &x.precommits[..])
            .collect();
        let live = self
            .live
            .as_ref()
            .filter(|l| l.window == c.window)
            .and_then(|l| l.precommits.get(&(c.round, c.proposal)));
        let known = |signer: &NodeId, sig: &[u8]| {
            vouched.iter().any(|ps| {
                ps.binary_search_by(|(id, _)| id.cmp(signer))
                    .is_ok_and(|i| ps[i].1 == sig)
            }) || live.is_some_and(|vs| {
                vs.iter()
                    .any(|v| v.key.signer == *signer && v.signature == sig)
            })
        };
        let mut checks = 0;
        let r = c.verify_except(
            &self.rules.network_id,
            c.window,
            set,
            self.rules.quorum,
            known,
            &mut checks,
        );
        self.signature_checks += checks;
        r
    }

    /// What a Cement of the tip window with hash `b` is worth as a bundle,
    /// for its place among the [`MAX_BUNDLES`] held: 3 when the next
    /// window's proposal that a held Cement names (decided elsewhere) names
    /// it; 2 when the live window's value of the current round, or its
    /// locked or valid value, names it; 1 when any other held proposal of
    /// the next window does (a Byzantine round leader's value, a proposal
    /// fetched but not decided); 0 when none does. Anyone can make valid
    /// Cements of a window from its relayed precommits, so only what the
    /// agreement is about, or what a quorum decided, may push others out.
    fn bundle_worth(&self, b: &Hash32) -> u8 {
        let next = self.tip.window + 1;
        let names = |p: &Proposal| p.header.bundle == b.0;
        let held = self.waiting.get(&next).map_or(&[][..], |s| &s[..]);
        if held
            .iter()
            .any(|(_, p)| names(p) && self.cement_names(next, p))
        {
            return 3;
        }
        let Some(live) = self.live.as_ref() else {
            return held.iter().any(|(_, p)| names(p)) as u8;
        };
        let round = live.agreement.round();
        let pinned = [
            live.agreement.locked().map(|l| l.0),
            live.agreement.valid().map(|v| v.0),
        ];
        let current = live.values.iter().any(|(v, (_, p))| {
            names(p) && (live.round_of.get(v) == Some(&round) || pinned.contains(&Some(*v)))
        });
        if current {
            return 2;
        }
        (held.iter().any(|(_, p)| names(p)) || live.values.values().any(|(_, p)| names(p))) as u8
    }

    /// Whether a proposal held for `window` names `bundle` (a Cement of
    /// the window before) as its bundle.
    fn names_bundle(&self, window: u64, bundle: &Hash32) -> bool {
        self.waiting
            .get(&window)
            .is_some_and(|s| s.iter().any(|(_, p)| p.header.bundle == bundle.0))
    }

    /// Where a verified Cement `c` (above the tip) with hash `h` goes
    /// among those held: `Some(None)` added (in place of the highest
    /// windows' when [`MAX_CEMENT_BYTES`] are held), `Some(Some(i))` in
    /// place of entry `i` (the window's slot is full, a held proposal of
    /// the next window names `h` as its bundle and none names entry `i`),
    /// `None` nowhere (held already, its slot full of Cements as good, or
    /// the bytes full of Cements of windows as near; the next window's
    /// always has room).
    fn cement_place(&self, c: &Cement, h: &Hash32) -> Option<Option<usize>> {
        let window = c.window;
        let held = self
            .waiting_cements
            .get(&window)
            .map_or(&[][..], |s| &s[..]);
        if held.iter().any(|(x, _)| x == h) {
            return None;
        }
        if held.len() < MAX_WINDOW_CEMENTS {
            // Within the bytes, or nearer than what the bytes hold (the
            // highest windows give way), or the next window's.
            let full = self.cement_bytes() + c.weight() > self.cement_budget;
            let nearer = self
                .waiting_cements
                .last_key_value()
                .is_some_and(|(&top, _)| top > window);
            if full && !nearer && window > self.tip.window + 1 {
                return None;
            }
            return Some(None);
        }
        if !self.names_bundle(window + 1, h) {
            return None;
        }
        held.iter()
            .position(|(x, _)| !self.names_bundle(window + 1, x))
            .map(Some)
    }

    /// Bytes of the Cements held above the tip (at most a few thousand:
    /// summed when one more comes, after the cheaper checks).
    fn cement_bytes(&self) -> usize {
        self.waiting_cements
            .values()
            .flatten()
            .map(|(_, c)| c.weight())
            .sum()
    }

    /// The held Cement of `window` with hash `bundle` that names the
    /// proposal `of` (a bundle the next window's proposal names).
    fn held_bundle(&self, window: u64, bundle: &[u8; 32], of: &[u8; 32]) -> Option<&Cement> {
        let tip = (window == self.tip.window && *of == self.tip.hash)
            .then(|| self.bundles.find(bundle))
            .flatten();
        tip.or_else(|| {
            self.waiting_cements.get(&window).and_then(|cs| {
                cs.iter()
                    .find(|(h, c)| h.0 == *bundle && c.proposal.0 == *of)
                    .map(|(_, c)| c)
            })
        })
    }

    /// The live window is decided: `value` with the precommits of `round`.
    fn decide(
        &mut self,
        value: Hash32,
        round: u32,
        signers: &[NodeId],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        let Some((_, p)) = live.values.get(&value).cloned() else {
            return;
        };
        let votes: Vec<Vote> = live
            .precommits
            .get(&(round, value))
            .map(|vs| {
                vs.iter()
                    .filter(|v| signers.contains(&v.key.signer))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let Some(cement) = Cement::from_votes(&votes) else {
            return;
        };
        self.cement_live(p, cement, now, out);
    }

    fn cement_live(&mut self, p: Proposal, cement: Cement, now: Instant, out: &mut Vec<Action>) {
        let prev = if self.tip.window == 0 {
            None
        } else {
            self.bundles.find(&p.header.bundle).cloned()
        };
        let Some((changes, root)) = self.state_after(prev.as_ref()) else {
            return;
        };
        debug_assert_eq!(root, p.header.state_root, "validated before it was decided");
        let paid = self.paid(prev.as_ref());
        let prev_bundle =
            prev.filter(|_| self.bundles.first_hash() != Some(Hash32(p.header.bundle)));
        let set = self.advance(&p, changes, root);
        let certificate = self.certificate(&p, &cement, &set);
        self.bundles = Bundles::of(cement.clone());
        self.remember(p.window(), p.checkpoints.clone());
        out.push(Action::Cement(vec![Cemented {
            proposal: p,
            cement,
            prev_bundle,
            root,
            paid,
            set,
            certificate,
        }]));
        self.after_cemented(now, out);
    }

    /// Moves the tip to `p`, cemented, with the state after it: the set
    /// that cemented it (returned) becomes the tip's set.
    fn advance(&mut self, p: &Proposal, changes: Changes, root: Hash32) -> ActiveSet {
        let set = self.state.active().clone();
        self.state.apply(changes);
        self.root = root;
        self.prev_t = Some(self.tip.t);
        self.tip = self.tip.after(p);
        self.tip_proposer = p.header.proposer;
        self.tip_extras = p.extras.clone();
        self.tip_set = set.clone();
        self.applied = None;
        set
    }

    /// The membership certificate of `p`'s window, just advanced to, when
    /// the set after it is not `set`, the one that cemented it (SPEC 13.4).
    fn certificate(&self, p: &Proposal, cement: &Cement, set: &ActiveSet) -> Option<Certificate> {
        if self.state.active() == set {
            return None;
        }
        let m = self.state.members_range();
        debug_assert_eq!(self.state.root(), p.header.state_root);
        Some(Certificate {
            header: p.header.clone(),
            cement: cement.clone(),
            entries: m.entries,
            first: m.first,
            range: m.range,
            proof: m.proof,
        })
    }

    fn after_cemented(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.passed.clear();
        if self.state.active() != &self.tip_set {
            out.push(Action::Members(self.state.active().clone()));
        }
        self.prune();
        self.prune_candidates();
        self.register(out);
        self.candidate_work(out);
        self.verify_candidates(out);
        self.open_window(now, out);
        let next = self.tip.window + 1;
        if self.known_checkpoints(next).is_some() {
            self.mark_applied(next, out);
        }
    }

    // ---- verification results -------------------------------------------

    /// The result of an [`Action::Verify`]; `Err` is a backend failure (the
    /// work goes back to wait for a retry, nobody is blamed).
    pub fn on_verified(
        &mut self,
        batch: Batch,
        outcome: Result<VerifyOutcome, String>,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        self.verifying = false;
        self.verifying_upto = 0;
        let mut out = Vec::new();
        if batch.is_live() {
            let p = &batch.proposals[0];
            let v = Hash32(p.hash());
            let Some(live) = self.live.as_mut().filter(|l| l.window == p.window()) else {
                self.next_work(now, &mut out);
                return out;
            };
            live.verifying = None;
            match outcome {
                Ok(VerifyOutcome::Valid) => {
                    self.remember(p.window(), p.checkpoints.clone());
                    self.mark_applied(p.window(), &mut out);
                    self.validated(v, true, now, &mut out);
                    // Other values with the same checkpoints need no work.
                    let live = self.live.as_mut();
                    if let Some(live) = live {
                        live.to_validate.retain(|x| *x != v);
                    }
                }
                Ok(VerifyOutcome::Invalid { first_bad_segment }) => {
                    let main = batch.proofs.len() * self.rules.checkpoints as usize;
                    let reason = if first_bad_segment >= main {
                        Reject::Candidate("candidate_bad_proof")
                    } else {
                        Reject::BadCheckpoint {
                            segment: first_bad_segment,
                        }
                    };
                    self.reject(batch.from, p.window(), reason, &mut out);
                    self.validated(v, false, now, &mut out);
                }
                Err(_) => live.to_validate.push_back(v),
            }
            self.validate_next(&mut out);
            self.next_work(now, &mut out);
            return out;
        }
        let k = self.rules.checkpoints as usize;
        // A Cement that failed its window's set (it passed the set after
        // the tip when it came): dropped and counted, and the windows from
        // its own wait again, unblamed (their proofs were not verified).
        let mut cut = batch.proposals.len();
        if let Some(bad) = batch.bad_cement {
            let first = batch.proposals.first().map_or(0, |p| p.window());
            cut = bad.saturating_sub(first) as usize;
            let dropped = if bad < first {
                batch.prev_bundle.as_ref()
            } else {
                batch.cements.get(cut)
            };
            if let Some(c) = dropped {
                let h = c.hash();
                if let Some(slot) = self.waiting_cements.get_mut(&bad) {
                    slot.retain(|(x, _)| *x != h);
                    if slot.is_empty() {
                        self.waiting_cements.remove(&bad);
                    }
                }
                self.bundles.drop_hash(&h);
            }
            self.reject(None, bad, Reject::Cement("cement_wrong_set"), &mut out);
        }
        let good = match outcome {
            Ok(VerifyOutcome::Valid) => cut,
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
                // The Cements stayed where they were (a batch takes copies).
                for p in batch.proposals {
                    self.wait(batch.from, p);
                }
                self.next_work(now, &mut out);
                return out;
            }
        };
        let mut proposals = batch.proposals;
        if good == cut && cut < proposals.len() {
            for p in proposals.split_off(cut) {
                self.wait(batch.from, p);
            }
        }
        let mut cemented = Vec::new();
        let mut prev = batch.prev_bundle.clone();
        for (p, c) in proposals.into_iter().zip(batch.cements).take(good) {
            if p.window() != self.tip.window + 1 || p.header.link != self.tip.hash {
                break; // the live agreement got there first
            }
            let bundle = if self.tip.window == 0 {
                None
            } else {
                prev.clone()
                    .or_else(|| self.bundles.find(&p.header.bundle).cloned())
            };
            let Some((changes, root)) = self.state_after(bundle.as_ref()) else {
                break;
            };
            if root != p.header.state_root {
                break; // checked when the batch was taken
            }
            let paid = self.paid(bundle.as_ref());
            let prev_bundle =
                bundle.filter(|_| self.bundles.first_hash() != Some(Hash32(p.header.bundle)));
            let set = self.advance(&p, changes, root);
            let certificate = self.certificate(&p, &c, &set);
            self.bundles = Bundles::of(c.clone());
            prev = None;
            cemented.push(Cemented {
                proposal: p,
                cement: c,
                prev_bundle,
                root,
                paid,
                set,
                certificate,
            });
        }
        if !cemented.is_empty() {
            if let Some(last) = cemented.last() {
                let (w, cps) = (last.proposal.window(), last.proposal.checkpoints.clone());
                self.remember(w, cps);
            }
            out.push(Action::Cement(cemented));
            self.after_cemented(now, &mut out);
        }
        self.next_work(now, &mut out);
        out
    }

    // ---- joining (SPEC 9.9) ---------------------------------------------

    /// What this node's new proposal for the window after the tip carries:
    /// verified pooled proofs that are valid against the roster it commits
    /// to, up to the cap, runs in progress first, then by a draw of the
    /// tip's hash ([`carry`]), and one valid registration, the first by
    /// that draw.
    fn pick_extras(&self) -> Extras {
        let h = self.tip.window + 1;
        let changes = if self.tip.window == 0 {
            Changes::default()
        } else {
            match self.bundles.first().and_then(|c| self.state_after(Some(c))) {
                Some((c, _)) => c,
                None => return Extras::default(),
            }
        };
        let roster = self.roster_after(&changes);
        let cap = self.rules.joining.proofs_per_proposal(self.rules.d);
        let valid: Vec<CandidateProof> = self
            .pool
            .iter()
            .filter(|((_, w), c)| {
                self.candidate_t(*w, h).is_ok() && self.check_candidate(c, roster).is_ok()
            })
            .map(|(_, c)| c.clone())
            .collect();
        let draw = Hash32(self.tip.hash);
        let proofs = carry(valid, &roster.candidates, &self.rules.joining, &draw, cap);
        let carried: Vec<&CandidateProof> = proofs.iter().collect();
        let ready: Vec<&NodeId> = self
            .registrations
            .values()
            .filter(|g| self.check_registration(g, roster, &carried, 0).is_ok())
            .map(|g| &g.id)
            .collect();
        let registration =
            first_by_draw(ready, &draw).and_then(|id| self.registrations.get(&id).cloned());
        Extras {
            proofs,
            registration,
        }
    }

    /// T of a window whose candidate proofs may still be carried by the
    /// live window's proposal or the next one: the tip, the window before
    /// it, or the applied window after it.
    fn gossip_t(&self, window: u64) -> Option<Hash32> {
        if window == self.tip.window {
            Some(self.tip.t)
        } else if self.tip.window.checked_sub(1) == Some(window) {
            self.prev_t
        } else {
            self.applied.filter(|(w, _)| *w == window).map(|(_, t)| t)
        }
    }

    /// A gossiped candidate proof: members check it (cheap checks and the
    /// signature first) and verify its chain, to carry it.
    fn on_candidate_proof(
        &mut self,
        peer: Option<PeerIndex>,
        c: CandidateProof,
        out: &mut Vec<Action>,
    ) {
        // Not checked here (a non-member does not judge proofs; one whose
        // chain failed; one far ahead): not forwarded either.
        if !self.is_member() || self.bad_proofs.contains(&(c.window, c.id)) {
            return out.push(Action::Unchecked);
        }
        let key = c.key();
        let verified = self.pool.get(&key);
        if verified == Some(&c) {
            return; // a copy of one verified: forwarded
        }
        if verified.is_some()
            || self.unverified.iter().any(|(_, x)| x.key() == key)
            || self.candidate_from.iter().any(|(_, k)| *k == key)
        {
            // A copy of one waiting for its chain's verification (forwarded
            // once verified), or another proof of a candidate and window
            // held (signatures are randomised: re-signed, or forged): not
            // judged, not forwarded now.
            return out.push(Action::Unchecked);
        }
        if c.window.saturating_add(1) < self.tip.window {
            return self.reject(peer, c.window, Reject::Candidate("candidate_late"), out);
        }
        if c.window > self.tip.window.saturating_add(2) {
            // Ahead of anything this node could carry soon.
            return out.push(Action::Unchecked);
        }
        self.signature_checks += 1;
        if let Err(r) = self.check_candidate(&c, self.state.roster()) {
            return self.reject(peer, c.window, r, out);
        }
        if self.unverified.len() + self.pool.len() >= MAX_POOLED_PROOFS {
            // Full: a fair share per peer (a flood from one peer keeps at
            // most its share of the queue, not the queue).
            // One not queued is not judged: not forwarded either (the
            // relay would carry every such proof across the network).
            let held: Vec<Option<PeerIndex>> = self.unverified.iter().map(|(p, _)| *p).collect();
            let Some(i) = fair_share(&held, peer) else {
                return out.push(Action::Unchecked);
            };
            self.unverified.remove(i);
        }
        self.unverified.push_back((peer, c));
        // Forwarded once its chain verified ([`Action::Forward`]): a junk
        // proof costs a chain on the members it was sent to, not on every
        // member, and its chain failing is its sender's offence.
        out.push(Action::Unchecked);
        self.verify_candidates(out);
    }

    /// Sends the waiting gossiped proofs to the verifier (one call).
    fn verify_candidates(&mut self, out: &mut Vec<Action>) {
        if self.verifying_candidates {
            return;
        }
        let mut proofs = Vec::new();
        let mut chains = Vec::new();
        // Proofs for a window whose T this node does not know yet (it is
        // still verifying it) wait for it.
        let mut early = VecDeque::new();
        let mut from = Vec::new();
        while proofs.len() < self.candidate_batch {
            let Some((peer, c)) = self.unverified.pop_front() else {
                break;
            };
            match self.gossip_t(c.window) {
                Some(t) => {
                    if let Some(chain) = c.proof(self.rules.suite, &self.rules.joining, &t) {
                        chains.push(chain);
                        from.push((peer, c.key()));
                        proofs.push(c);
                    }
                }
                None if c.window > self.tip.window => early.push_back((peer, c)),
                None => {}
            }
        }
        self.candidate_from = from;
        early.extend(self.unverified.drain(..));
        self.unverified = early;
        if proofs.is_empty() {
            return;
        }
        self.verifying_candidates = true;
        out.push(Action::VerifyCandidates { proofs, chains });
    }

    /// The result of an [`Action::VerifyCandidates`]: the proofs before the
    /// first bad segment are pooled, the bad one is rejected, the rest go
    /// back to wait; a backend failure puts them all back.
    pub fn on_candidates_verified(
        &mut self,
        proofs: Vec<CandidateProof>,
        outcome: Result<VerifyOutcome, String>,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        self.verifying_candidates = false;
        let mut out = Vec::new();
        let k = self.rules.joining.candidate_k as usize;
        let good = match outcome {
            Ok(VerifyOutcome::Valid) => proofs.len(),
            Ok(VerifyOutcome::Invalid { first_bad_segment }) => first_bad_segment / k,
            Err(_) => 0,
        };
        let failed = outcome.is_err();
        if !failed {
            self.candidate_batch = if good < proofs.len() {
                (self.candidate_batch / 2).max(1)
            } else {
                (self.candidate_batch * 2).min(CANDIDATE_BATCH)
            };
        }
        let mut from = std::mem::take(&mut self.candidate_from).into_iter();
        let mut offender = None;
        for (i, c) in proofs.into_iter().enumerate() {
            let peer = from.next().and_then(|(p, _)| p);
            if i < good {
                // Verified: on to the peers that lack it (held back when
                // it came).
                out.push(Action::Forward {
                    from: peer,
                    msg: Message::CandidateProof(Box::new(c.clone())),
                });
                if self.pool.len() < MAX_POOLED_PROOFS {
                    self.pool.insert(c.key(), c);
                }
            } else if i == good && !failed {
                // Remembered while its window lasts; when full, the oldest
                // window's go first (a flood must not stop the memory).
                if self.bad_proofs.len() >= MAX_POOLED_PROOFS {
                    self.bad_proofs.pop_first();
                }
                self.bad_proofs.insert((c.window, c.id));
                // Its sender's offence: a node forwards a proof only once
                // its chain verified, and the chain starts at T of its
                // window, fixed by the VDF (tip - 1, the tip, or the
                // applied window), the same for every node that knows it;
                // the verdict is the scalar oracle's (a backend's
                // rejection is re-checked before it is answered). The
                // sender's other proofs waiting here go unjudged: no
                // honest node sends one that fails.
                self.reject(
                    peer,
                    c.window,
                    Reject::Candidate("candidate_bad_proof"),
                    &mut out,
                );
                offender = peer;
                if let Some(peer) = peer {
                    out.push(Action::Offence {
                        peer,
                        offence: crate::net::misbehaviour::Offence::BadProof,
                    });
                }
            } else {
                self.unverified.push_back((peer, c));
            }
        }
        if let Some(p) = offender {
            self.unverified.retain(|(from, _)| *from != Some(p));
        }
        self.verify_candidates(&mut out);
        self.next_work(now, &mut out);
        out
    }

    /// A gossiped registration: kept (for this node's proposals) when its
    /// candidate has counted enough windows and it is signed by the key of
    /// the candidate's entry.
    fn on_registration(&mut self, peer: Option<PeerIndex>, g: Registration, out: &mut Vec<Action>) {
        if !self.is_member() {
            // Not judged here: not forwarded either.
            return out.push(Action::Unchecked);
        }
        match self.registrations.get(&g.id) {
            Some(held) if *held == g => return, // a copy of one checked
            // Another registration of a candidate held (re-signed, or
            // forged): not judged, not forwarded.
            Some(_) => return out.push(Action::Unchecked),
            None => {}
        }
        self.signature_checks += 1;
        let pooled = self.pooled_of(&g.id);
        if let Err(r) = self.check_registration(&g, self.state.roster(), &pooled, 1) {
            return self.reject(peer, g.window, r, out);
        }
        if self.registrations.len() < MAX_POOLED_REGISTRATIONS {
            self.registrations.insert(g.id, g);
        }
    }

    fn prune_candidates(&mut self) {
        let floor = self.tip.window.saturating_sub(1);
        self.pool.retain(|(_, w), _| *w >= floor);
        self.unverified.retain(|(_, c)| c.window >= floor);
        self.bad_proofs.retain(|(w, _)| *w >= floor);
        let roster = self.state.roster();
        let keep: Vec<NodeId> = self
            .registrations
            .values()
            .filter(|g| {
                let pooled = self.pooled_of(&g.id);
                self.check_registration(g, roster, &pooled, 1).is_ok()
            })
            .map(|g| g.id)
            .collect();
        self.registrations.retain(|id, _| keep.contains(id));
    }

    /// This node, following as a candidate: evaluate its own chain for the
    /// newest window whose T it knows, once per window, until registered.
    fn candidate_work(&mut self, out: &mut Vec<Action>) {
        if !self.started || self.stopped || self.keys.is_none() || self.is_member() {
            return;
        }
        if self.lag() > 1 || self.candidate_evaluating.is_some() {
            return;
        }
        if self.candidacy().is_some_and(|c| {
            c.effective.is_some() || c.count >= self.rules.joining.candidate_windows
        }) {
            return;
        }
        let (w, t) = (self.applied(), self.applied_t());
        if self.candidate_streak.is_some_and(|(_, last)| last >= w) {
            return;
        }
        self.candidate_evaluating = Some(w);
        out.push(Action::EvaluateCandidate {
            window: w,
            start: crate::consensus::joining::candidate_start(self.rules.suite, &t, &self.me),
        });
    }

    /// The result of an [`Action::EvaluateCandidate`] (`None`: it failed):
    /// the proof is signed and sent to every peer.
    pub fn on_candidate_evaluated(
        &mut self,
        window: u64,
        checkpoints: Option<Vec<Hash32>>,
        now: Instant,
    ) -> Vec<Action> {
        self.clock = now;
        self.candidate_evaluating = None;
        let mut out = Vec::new();
        if let (Some(cps), Some(keys)) = (checkpoints, self.keys.clone()) {
            if cps.len() == self.rules.joining.candidate_k as usize {
                let p = CandidateProof::sign(
                    &keys,
                    self.rules.network_id,
                    self.rules.suite,
                    window,
                    cps,
                );
                self.candidate_streak = match self.candidate_streak {
                    Some((f, l)) if l + 1 == window => Some((f, window)),
                    _ => Some((window, window)),
                };
                out.push(Action::Send {
                    to: None,
                    msg: Message::CandidateProof(Box::new(p)),
                });
                // The registration goes with the proof that completes the
                // count, to ride in the same proposal.
                self.register(&mut out);
            }
        }
        self.candidate_work(&mut out);
        self.next_work(now, &mut out);
        out
    }

    /// This node's registration, once the proofs it sent reach its count
    /// (the counted ones and those sent since, for consecutive windows: the
    /// registration rides with the last one, SPEC 9.9) and until it is
    /// registered: sent at most every other window.
    fn register(&mut self, out: &mut Vec<Action>) {
        let Some(keys) = self.keys.clone() else {
            return;
        };
        // The count once the proofs sent are counted: the state's, plus
        // the run sent since its last counted window (or the run alone).
        let Some((first, last)) = self.candidate_streak else {
            return;
        };
        let expected = match self.candidacy() {
            Some(c) if c.effective.is_some() => 0,
            Some(c) if c.count > 0 && c.last + 1 >= first => {
                c.count as u64 + last.saturating_sub(c.last)
            }
            _ => last - first + 1,
        };
        let due = expected >= self.rules.joining.candidate_windows as u64;
        if !due
            || self.is_member()
            || self
                .registration_sent
                .is_some_and(|w| self.tip.window < w + 2)
        {
            return;
        }
        self.registration_sent = Some(self.tip.window);
        let g = Registration::sign(&keys, self.rules.network_id, self.tip.window);
        out.push(Action::Send {
            to: None,
            msg: Message::Registration(Box::new(g)),
        });
    }

    // ---- catch-up ---------------------------------------------------------

    fn demote(&mut self, peer: PeerIndex, now: Instant) {
        let c = self.claims.entry(peer).or_default();
        c.strikes = c.strikes.saturating_add(1);
        let backoff = REQUEST_TIMEOUT
            .saturating_mul(1 << (c.strikes - 1).min(16))
            .min(MAX_DEMOTION);
        c.window = 0;
        c.demoted_until = Some(now + backoff);
    }

    /// Whom to ask for windows from `from` on: the member claiming most,
    /// a guest only when no member claims `from`; a slow peer (its last
    /// useful answer brought under [`SLOW_RATE`] windows a second, or
    /// under a [`SLOW_SHARE`] of the best rate of a peer of its class)
    /// only when no other of its class claims `from` (module doc). Rates
    /// are compared within a class: a fast guest must not make every
    /// member slow, and so the slow member first again.
    fn pick_peer(&self, from: u64) -> Option<(PeerIndex, u64)> {
        let best = |member: bool| {
            self.standing()
                .filter(|c| c.member == member)
                .filter_map(|c| c.rate)
                .fold(0.0f64, f64::max)
        };
        let best = [best(false), best(true)];
        let slow = |c: &Claim| {
            c.rate
                .is_some_and(|r| r < (best[usize::from(c.member)] * SLOW_SHARE).max(SLOW_RATE))
        };
        self.claims
            .iter()
            .filter(|(_, c)| c.demoted_until.is_none() && !c.gone && c.window >= from)
            .max_by_key(|&(p, c)| (c.member, !slow(c), c.window, std::cmp::Reverse(*p)))
            .map(|(p, c)| (*p, c.window))
    }

    fn reject(&mut self, peer: Option<PeerIndex>, window: u64, r: Reject, out: &mut Vec<Action>) {
        *self.rejected.entry(r.kind()).or_default() += 1;
        out.push(Action::Rejected {
            peer,
            window,
            reason: r,
        });
    }

    /// A cemented proposal from catch-up: cheap checks, the maker's
    /// signature, then the waiting room. Whether it was new.
    fn admit(&mut self, peer: Option<PeerIndex>, p: Proposal, out: &mut Vec<Action>) -> bool {
        let w = p.window();
        if let Err(r) = self.cheap_checks(&p) {
            self.reject(peer, w, r, out);
            return false;
        }
        if w <= self.tip.window || w > self.tip.window.saturating_add(WAITING_HORIZON) {
            return false;
        }
        let hash = p.hash();
        if self
            .waiting
            .get(&w)
            .is_some_and(|slot| slot.iter().any(|(_, q)| q.hash() == hash))
        {
            return false;
        }
        // The maker's signature, when its key is known here (a member of
        // the set after the tip or of the tip's); a maker who joined later
        // is vouched for by the window's Cement, checked in the batch. The
        // next window's maker is a member of the set after the tip, always
        // (a stranger's proposal for it would count as naming a bundle).
        if w == self.tip.window + 1 && self.state.active().get(&p.header.proposer).is_none() {
            self.reject(peer, w, Reject::WrongProposer, out);
            return false;
        }
        let maker = self
            .state
            .active()
            .get(&p.header.proposer)
            .or_else(|| self.tip_set.get(&p.header.proposer))
            .map(|m| m.key.clone());
        if let Some(key) = maker {
            self.signature_checks += 1;
            if !p.signed_by(&key) {
                self.reject(peer, w, Reject::BadMakerSignature, out);
                return false;
            }
        }
        self.wait(peer, p)
    }

    fn wait(&mut self, peer: Option<PeerIndex>, p: Proposal) -> bool {
        let w = p.window();
        let h = p.hash();
        let held = self.waiting.get(&w).map_or(&[][..], |s| &s[..]);
        if held.iter().any(|(_, q)| q.hash() == h) {
            return false;
        }
        // Full: the new proposal takes the place of one worth less. One
        // that a held Cement names is worth most, then one that links onto
        // what is held before it; anything else (junk by an unknown maker
        // cannot be told from a later member's proposal until its Cement
        // comes) gives way to either.
        let mut evict = None;
        if held.len() >= MAX_WINDOW_PROPOSALS {
            let worth = |q: &Proposal| 2 * self.cement_names(w, q) as u8 + self.links(w, q) as u8;
            let mine = worth(&p);
            let Some((i, least)) = held
                .iter()
                .enumerate()
                .map(|(i, (_, q))| (i, worth(q)))
                .min_by_key(|&(_, v)| v)
            else {
                return false;
            };
            if least >= mine {
                return false;
            }
            evict = Some(i);
        }
        // Over budget: windows above this one go first.
        let size = weight(&p);
        while self.waiting_bytes + size > self.waiting_budget {
            match self.waiting.last_key_value() {
                Some((&top, _)) if top > w => {
                    for (_, q) in self.waiting.remove(&top).unwrap_or_default() {
                        self.waiting_bytes -= weight(&q);
                    }
                }
                _ => return false,
            }
        }
        let slot = self.waiting.entry(w).or_default();
        if let Some(i) = evict {
            let (_, q) = slot.remove(i);
            self.waiting_bytes -= weight(&q);
        }
        slot.push((peer, p));
        self.waiting_bytes += size;
        true
    }

    fn prune(&mut self) {
        let keep = self.waiting.split_off(&(self.tip.window + 1));
        for (_, v) in std::mem::replace(&mut self.waiting, keep) {
            for (_, p) in v {
                self.waiting_bytes -= weight(&p);
            }
        }
        let keep = self.waiting_cements.split_off(&self.tip.window);
        self.waiting_cements = keep;
        self.refused_cements.clear();
        self.early.retain(|(_, e)| e.window() > self.tip.window);
    }

    /// The next consecutive run of waiting proposals, each with a Cement
    /// of a quorum for exactly it, linking onto the tip and with the right
    /// state roots.
    fn take_batch(&mut self, out: &mut Vec<Action>) -> Option<Batch> {
        let mut link = self.tip.hash;
        let mut start = self.tip.t;
        let mut state = self.state.overlay();
        let mut prev_proposer = self.tip_proposer;
        let mut prev_extras = self.tip_extras.clone();
        let mut batch = Batch {
            from: None,
            proposals: Vec::new(),
            proofs: Vec::new(),
            cements: Vec::new(),
            prev_bundle: None,
            sets: Vec::new(),
            prev_set: None,
            candidates: Vec::new(),
            bad_cement: None,
        };
        let mut w = self.tip.window + 1;
        let mut bytes = 0;
        while batch.proposals.len() < MAX_BATCH_WINDOWS && bytes < self.batch_bytes {
            let Some(slot) = self.waiting.get(&w) else {
                break;
            };
            let cements = self.waiting_cements.get(&w);
            let cement_of = |p: &Proposal| {
                let h = p.hash();
                cements.and_then(|cs| cs.iter().find(|(_, c)| c.proposal.0 == h))
            };
            let chosen = slot
                .iter()
                .position(|(_, p)| p.header.link == link && cement_of(p).is_some());
            let Some(i) = chosen else { break };
            let p = slot[i].1.clone();
            let peer = slot[i].0;
            // Any Cement of it for now: where the next window is in the
            // batch, the one that it names takes its place below.
            let cement = cement_of(&p).map(|(_, c)| c.clone()).expect("checked");
            // The set that cemented window w: the one after window w-1.
            let set = match batch.sets.last() {
                Some(last) if **last == state.roster().active => last.clone(),
                _ => std::sync::Arc::new(state.roster().active.clone()),
            };
            // The bundle that pays the window before.
            if w > 1 {
                // Any held Cement of the window before, for the proposal
                // this one links onto, whose hash it names.
                let Some(bundle) = self
                    .held_bundle(w - 1, &p.header.bundle, &p.header.link)
                    .cloned()
                else {
                    break;
                };
                let signers: Vec<NodeId> = bundle.precommits.iter().map(|(id, _)| *id).collect();
                if state
                    .settle(&Settle {
                        emission: self.rules.emission,
                        joining: &self.rules.joining,
                        window: w - 1,
                        proposer: prev_proposer,
                        signers: &signers,
                        extras: &prev_extras,
                    })
                    .is_err()
                {
                    break;
                }
                if w == self.tip.window + 1
                    && self.bundles.first_hash() != Some(Hash32(p.header.bundle))
                {
                    batch.prev_bundle = Some(bundle);
                    batch.prev_set = Some(self.tip_set.clone());
                } else if w > self.tip.window + 1 {
                    // The bundle named is the previous window's Cement in
                    // this batch: it becomes canonical when written.
                    let last = batch
                        .cements
                        .last_mut()
                        .expect("previous window in the batch");
                    *last = bundle;
                }
            }
            let root = state.root();
            if root != p.header.state_root {
                self.remove_waiting(w, &p);
                self.reject(
                    peer,
                    w,
                    Reject::WrongStateRoot {
                        expected: root,
                        got: p.header.state_root,
                    },
                    out,
                );
                break;
            }
            if batch.from.is_none() {
                batch.from = peer;
            }
            batch.proofs.push(p.proof(start));
            bytes += weight(&p);
            link = p.hash();
            start = p.header.t;
            prev_proposer = p.header.proposer;
            prev_extras = p.extras.clone();
            batch.sets.push(set);
            batch.cements.push(cement);
            batch.proposals.push(p);
            w += 1;
        }
        if batch.proposals.is_empty() {
            return None;
        }
        for p in &batch.proposals {
            self.remove_waiting(p.window(), p);
        }
        Some(batch)
    }

    /// The last window verified or being verified, and the hash that the
    /// proposal of the window after it must link onto.
    fn linked_base(&self) -> (u64, [u8; 32]) {
        if self.verifying && self.verifying_upto > self.tip.window {
            (self.verifying_upto, self.verifying_link)
        } else {
            (self.tip.window, self.tip.hash)
        }
    }

    /// The first window after [`Chain::linked_base`] without a usable
    /// proposal, and the bytes of those before it. Usable: it links onto
    /// one usable for the window before (onto the tip or the batch being
    /// verified for the first) and, where Cements of its window are held,
    /// one names it (a run of junk that links onto itself is asked past
    /// only until the Cements come).
    fn linked_run(&self) -> (u64, usize) {
        let (base, link) = self.linked_base();
        let mut prev = vec![link];
        let mut w = base + 1;
        let mut bytes = 0;
        while let Some(slot) = self.waiting.get(&w) {
            let cemented = self.waiting_cements.contains_key(&w);
            let mut next = Vec::new();
            for (_, p) in slot.iter().filter(|(_, p)| {
                prev.contains(&p.header.link) && (!cemented || self.cement_names(w, p))
            }) {
                bytes += weight(p);
                next.push(p.hash());
            }
            if next.is_empty() {
                break;
            }
            prev = next;
            w += 1;
        }
        (w, bytes)
    }

    /// A proposal held for `window` links onto the tip, the batch being
    /// verified, or a proposal held for the window before.
    fn links(&self, window: u64, p: &Proposal) -> bool {
        let (base, link) = self.linked_base();
        (window == base + 1 && p.header.link == link)
            || (window == self.tip.window + 1 && p.header.link == self.tip.hash)
            || self
                .waiting
                .get(&(window - 1))
                .is_some_and(|s| s.iter().any(|(_, q)| q.hash() == p.header.link))
    }

    /// A held Cement of `window` names `p`.
    fn cement_names(&self, window: u64, p: &Proposal) -> bool {
        let h = p.hash();
        self.waiting_cements
            .get(&window)
            .is_some_and(|cs| cs.iter().any(|(_, c)| c.proposal.0 == h))
    }

    /// A proposal held for `window` that a held Cement names (cemented)
    /// names a bundle that is not held for the window before.
    fn bundle_missing(&self, window: u64) -> bool {
        window >= 2
            && self.waiting.get(&window).is_some_and(|slot| {
                slot.iter().any(|(_, p)| {
                    self.cement_names(window, p)
                        && self
                            .held_bundle(window - 1, &p.header.bundle, &p.header.link)
                            .is_none()
                })
            })
    }

    fn remove_waiting(&mut self, w: u64, p: &Proposal) {
        if let Some(slot) = self.waiting.get_mut(&w) {
            let h = p.hash();
            if let Some(i) = slot.iter().position(|(_, q)| q.hash() == h) {
                let (_, q) = slot.remove(i);
                self.waiting_bytes -= weight(&q);
            }
            if slot.is_empty() {
                self.waiting.remove(&w);
            }
        }
    }

    fn next_work(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.stopped {
            return;
        }
        self.validate_next(out);
        if !self.verifying && self.live.as_ref().is_none_or(|l| l.verifying.is_none()) {
            if let Some(batch) = self.take_batch(out) {
                self.verifying = true;
                if let Some(last) = batch.proposals.last() {
                    self.verifying_upto = last.window();
                    self.verifying_link = last.hash();
                }
                out.push(Action::Verify(batch));
            }
        }
        // Behind a peer's claim: fetch what the live agreement will not
        // bring (more than one window, or one that it has not settled for
        // a while).
        let best = self.best_claimed();
        let stuck = self
            .live
            .as_ref()
            .is_none_or(|l| now.saturating_duration_since(l.since) >= CATCH_UP_DELAY);
        if best <= self.tip.window || (best == self.tip.window + 1 && !stuck) {
            return;
        }
        if self.requested.is_some() {
            return;
        }
        // The first window past the verifier without a proposal, and the
        // first without a Cement: each is asked for only where it lacks
        // (Cements are as big as proposals in a large set).
        // A window counts as held when a proposal for it links onto what
        // is held before it (junk in a slot is asked past, not around),
        // and its Cement when one is held and the next window's cemented
        // proposal (if held) finds the bundle it names.
        let (base, _) = self.linked_base();
        let (p_from, ahead) = self.linked_run();
        let mut c_from = base + 1;
        if !self.bundle_missing(c_from) {
            while self.waiting_cements.contains_key(&c_from) && !self.bundle_missing(c_from + 1) {
                c_from += 1;
            }
        }
        // Proposals: at most one batch ahead of the verifier (the run that
        // it takes next; what waits beyond a gap does not hold up the
        // window that fills it). Cements: for the proposals held and those
        // asked for now.
        let want_p = p_from <= best && ahead < self.batch_bytes;
        let want_c = c_from < p_from || (want_p && c_from <= best);
        if !want_p && !want_c {
            return;
        }
        let Some((peer, claimed)) = self.pick_peer(if want_p { p_from } else { c_from }) else {
            return;
        };
        let n = want_p as u8 + want_c as u8;
        if !self.pace.take(f64::from(n), now) {
            return; // the tick asks again
        }
        let p_count = (claimed.saturating_sub(p_from) + 1).min(MAX_REQUEST as u64) as u32;
        let c_last = if want_p {
            claimed.min(p_from + p_count as u64 - 1)
        } else {
            p_from - 1
        };
        // From the window before when its Cement (the bundle that the
        // first proposal names) is not held, or a held proposal names
        // another: else from the first one missing (with hundreds of
        // members one Cement fills an answer, and asking for one held again
        // made no progress).
        let before = c_from.saturating_sub(1);
        let c_first = if before >= 1
            && !self.bundle_missing(c_from)
            && (self.waiting_cements.contains_key(&before)
                || (before == self.tip.window && self.bundles.len() > 0))
        {
            c_from
        } else {
            before.max(1)
        };
        let c_count = (c_last.saturating_sub(c_first) + 1).min(MAX_REQUEST as u64) as u32;
        self.requested = Some(Requested {
            peer,
            at: now,
            proposals: want_p,
            cements: want_c,
        });
        out.push(Action::Request {
            peer,
            proposals: want_p.then_some((p_from, p_count)),
            cements: want_c.then_some((c_first, c_count)),
        });
    }
}

/// The catch-up request in flight: to whom, since when, and the answers
/// still awaited (Proposals end it; Cements end a request of Cements
/// alone).
#[derive(Clone, Copy, Debug)]
struct Requested {
    peer: PeerIndex,
    at: Instant,
    proposals: bool,
    cements: bool,
}

/// Two token buckets, full at first: requests ([`REQUEST_PACE`] per
/// second, [`REQUEST_PACE_BURST`] deep) and answer bytes ([`BYTES_PACE`],
/// [`BYTES_PACE_BURST`]; charged on arrival, so it can go into debt).
#[derive(Debug, Default)]
struct Pace {
    requests: f64,
    bytes: f64,
    at: Option<Instant>,
}

impl Pace {
    fn refill(&mut self, now: Instant) {
        match self.at {
            None => (self.requests, self.bytes) = (REQUEST_PACE_BURST, BYTES_PACE_BURST),
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.requests = (self.requests + dt * REQUEST_PACE).min(REQUEST_PACE_BURST);
                self.bytes = (self.bytes + dt * BYTES_PACE).min(BYTES_PACE_BURST);
            }
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// `n` requests may go now (and are counted).
    fn take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.requests < n || self.bytes <= 0.0 {
            return false;
        }
        self.requests -= n;
        true
    }

    fn charge(&mut self, bytes: usize, now: Instant) {
        self.refill(now);
        self.bytes -= bytes as f64;
    }
}

#[cfg(test)]
mod tests;
