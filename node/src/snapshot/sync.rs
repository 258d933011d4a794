//! The syncing side of fast-sync, without I/O: events in (a peer up or
//! down, a message, the time), [`Action`]s out (send, stage, store a
//! verified chunk, check the members, install, demote, note). The runtime
//! carries the actions out in order; tests drive it with plain values.
//!
//! Rules (docs/SPEC.md 13.7):
//! - Discover: ask every usable peer for its newest manifest (GetManifest
//!   0). Once all answered, or after the request timeout (the silent ones
//!   demoted, `timeout`), every acceptable manifest becomes a candidate:
//!   byte-identical ones are one candidate with all their senders, so at
//!   most one per peer. A manifest at or below our tip is no offence (the
//!   peer's newest snapshot is older than our tip): it is ignored and
//!   counted ([`FastSync::stale_answers`]), the peer not demoted. A
//!   manifest that does not decode or hang together demotes its sender
//!   (`manifest_*`). Candidates are ordered: window descending, then the
//!   one whose snapshot (header and entry count) more peers offered, then
//!   the one more peers sent byte for byte, then the lowest sender. They
//!   are unverified: a liar's higher window comes first, so each costs at
//!   most one Certify budget and the next is taken without a new
//!   discovery round; discovery starts again only when none is left.
//! - Certify a candidate through one of its senders at a time, from the
//!   genesis: ask it for the membership certificates of the windows up to
//!   and including the manifest's w, page by page (each page asks for the
//!   windows after the last one received; an empty page ends the list),
//!   and follow them from the genesis set ([`super::certificate::follow`]);
//!   the manifest's Cement must verify against the set so obtained (the
//!   one before w's own certificate, if the set changed at w: that
//!   certificate must be of the manifest's proposal), for its header,
//!   whose state root is the manifest's. The set that cemented w and the
//!   certificates are staged with the manifest ([`Trust`]). Each page must
//!   come within the request timeout and the whole list within
//!   `certify_budget` of the first request (a sender dribbling one page
//!   per timeout cannot hold Certify; each non-empty page carries a valid
//!   certificate of a later window, at most [`MAX_TRUST_BYTES`] in all).
//!   Anything else refuses the manifest from that sender and demotes it
//!   (`manifest_*`, `certificate_broken`, `cement_*`,
//!   `cement_short_of_quorum`, `timeout`); the same manifest is then
//!   certified from scratch through its next sender (certificates are
//!   verified by following them, and every sender of the manifest vouches
//!   for it), and when no usable sender is left, the next candidate is
//!   taken. A sender that goes down is passed over without demotion.
//! - Valid certificates do not show that none was left out (G -> G + J
//!   left out, a Cement of w rebuilt from G's precommits verifies against
//!   G). The state's member set, committed to by the root, does: the
//!   member entries (tag `m`) sort together near the end of the state
//!   (`a` < `c` < `m` < `s`, SPEC 9.6), so the chunks are fetched from the
//!   last one down until verified chunks hold every member entry (a run of
//!   chunks from one starting before `m`, or chunk 0, to one ending after
//!   `m`, or the last): then [`Action::CheckMembers`] has the runtime
//!   check that they are the set the certificates lead to after w
//!   (`Staging::untrusted`), long before the rest is in. If not,
//!   [`FastSync::members_refused`] drops the target, demotes its source
//!   (`certificate_missing`) and takes the next sender or candidate. A
//!   resume goes on from the ends staged with each chunk held (its first
//!   and last tags): when those already hold every member entry the check
//!   is made first ([`FastSync::begin`]), else the chunks are fetched from
//!   the top down as before; chunks staged by an older build, whose ends
//!   are unknown, leave the check to the end, before installing (the
//!   runtime checks again there in any case).
//! - Fetch: stage the accepted manifest (dropping anything staged for
//!   another snapshot), ask for the window's proposal (checked against the
//!   header's hash), and ask for chunks from every usable peer in
//!   parallel, at most `in_flight_per_peer` outstanding per peer, from the
//!   highest missing index down until the members are checked, then the
//!   lowest missing index first, each chunk from one peer at a time. A
//!   chunk is verified on arrival ([`super::format::Chunk::verify`]) and
//!   handed to [`Action::StoreChunk`] at once: the machine holds no
//!   entries.
//! - A peer that sends a bad chunk, an unrequested or duplicated one, or
//!   lets a request time out is demoted: its outstanding chunks go back to
//!   the queue and it gets no request for a back-off (5 s, doubling per
//!   strike up to 120 s). The manifest's entry count is the one field no
//!   signature covers (the root commits to it): while no chunk has
//!   verified yet, a bad chunk from another peer than the manifest's
//!   source is held against nobody yet (that peer gets no more requests);
//!   the first chunk that verifies confirms the count and demotes those
//!   peers, while a bad chunk from the source itself, or no peer left to
//!   settle it, blames the manifest (`manifest_unconfirmed`, the source
//!   demoted) and the next sender or candidate is taken.
//! - A peer answering GetChunk with "not served" no longer serves the
//!   snapshot (pruned); when no usable peer serves it, the machine
//!   discovers again (the candidates left are dropped: newer snapshots are
//!   served) and, if the best snapshot is another one, says so
//!   ([`Action::Note`]) and starts on it.
//! - Resume: built from what staging holds ([`Resume`]), the machine asks
//!   only for the chunks not in, after the member check when it is due.
//! - Done: every chunk and the proposal in: [`Action::Install`] (or
//!   [`FastSync::members_refused`], above).
//! - Giving up ([`FastSync::exhausted`]): only once a discovery round
//!   has ended with no offer, no candidate is left, and nothing verified
//!   (no chunk) for the give-up time. Candidates waiting in the list, a manifest
//!   being certified and a snapshot being fetched never count against it:
//!   each candidate costs at most its senders' Certify budgets, and there
//!   is at most one per peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::consensus::active::{ActiveSet, Quorum};
use crate::messages::Message;
use crate::proposal::Proposal;

use super::certificate::{follow, Certificate, Trust};
use super::format::{Chunk, ChunkEnds, Manifest, SnapshotError};
use super::messages::SyncMessage;
use super::staging::HeldChunk;

pub type PeerIndex = u16;

/// Most certificate bytes one sync follows (a certificate per change of
/// the active set since the genesis; beyond this the node replays).
pub const MAX_TRUST_BYTES: usize = 64 << 20;
/// First demotion; doubles per strike.
pub const DEMOTION: Duration = Duration::from_secs(5);
/// Longest demotion.
pub const MAX_DEMOTION: Duration = Duration::from_secs(120);
/// The tag of a member entry's key (SPEC 9.6): the member entries sort
/// together, after the accounts (`a`) and candidates (`c`), before the
/// seen entries (`s`).
const MEMBER_TAG: u8 = b'm';

/// The fixed inputs.
#[derive(Clone, Debug)]
pub struct Config {
    pub network_id: [u8; 32],
    pub genesis_set: ActiveSet,
    pub quorum: Quorum,
    /// Only snapshots of windows above this one (our cemented tip).
    pub above: u64,
    /// Chunk requests outstanding per peer.
    pub in_flight_per_peer: usize,
    /// A request unanswered this long counts against the peer.
    pub timeout: Duration,
    /// One sender's certificates, every page, must be in within this long
    /// of the first request (else `timeout`, and the next sender).
    pub certify_budget: Duration,
}

/// What staging held when the node started.
#[derive(Clone, Debug)]
pub struct Resume {
    pub manifest: Manifest,
    /// The chunks in ([`super::staging::Staging::held_chunks`]).
    pub held: Vec<HeldChunk>,
    pub proposal: bool,
}

/// What the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send {
        peer: PeerIndex,
        msg: SyncMessage,
    },
    /// Ask `peer` for the proposal of `window` (GetProposals, type 17).
    RequestProposal {
        peer: PeerIndex,
        window: u64,
    },
    /// Drop what staging holds and start on this snapshot, trusted
    /// through the set and certificates given.
    Stage(Box<Manifest>, Box<Trust>),
    /// Write this verified chunk to staging, synced.
    StoreChunk(Box<Chunk>),
    /// Every member entry of the target's state is staged (the chunks
    /// holding them are in): check them against the set the staged
    /// certificates lead to (`Staging::untrusted`) and, if they differ,
    /// call [`FastSync::members_refused`].
    CheckMembers {
        window: u64,
    },
    /// Write the snapshot window's proposal (hash checked) to staging.
    StoreProposal(Box<Proposal>),
    /// Everything is in: check the staged root and install the snapshot.
    Install {
        window: u64,
    },
    /// `peer` sent something refused (counted under `reason`).
    Demote {
        peer: PeerIndex,
        reason: &'static str,
        detail: String,
    },
    /// One line for the operator.
    Note(String),
}

/// A manifest offered in discovery, not yet verified, with the peers that
/// sent it byte for byte.
#[derive(Clone, Debug)]
struct Candidate {
    manifest: Manifest,
    /// Senders not tried yet, ascending.
    senders: BTreeSet<PeerIndex>,
    /// Peers that offered the same snapshot (header and entry count),
    /// through this manifest or another Cement of it.
    support: usize,
}

/// Certifying one candidate through one of its senders.
#[derive(Debug)]
struct Certifying {
    /// The candidate; its senders are the ones left after `peer`.
    candidate: Candidate,
    peer: PeerIndex,
    /// For the page asked.
    deadline: Instant,
    /// For the whole list.
    until: Instant,
    /// The set in force after window `after`, followed from the genesis
    /// through `certificates` (verified so far), and the one in force at
    /// `after` (before its certificate).
    set: ActiveSet,
    before: ActiveSet,
    after: u64,
    certificates: Vec<Certificate>,
    bytes: usize,
}

impl Action {
    /// Whether this action writes, checks or installs the snapshot of
    /// `window`: those still queued when that target is refused
    /// ([`FastSync::members_refused`]) are dropped unexecuted.
    pub fn is_for(&self, window: u64) -> bool {
        match self {
            Action::StoreChunk(c) => c.window == window,
            Action::StoreProposal(p) => p.header.window == window,
            Action::CheckMembers { window: w } | Action::Install { window: w } => *w == window,
            _ => false,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Discover {
        asked: BTreeSet<PeerIndex>,
        /// At most one per peer asked.
        offers: Vec<Candidate>,
        deadline: Instant,
    },
    Certify(Box<Certifying>),
    Fetch,
    Done,
}

#[derive(Debug, Default)]
struct Peer {
    up: bool,
    demoted_until: Option<Instant>,
    strikes: u32,
    /// Chunk index -> when asked.
    in_flight: BTreeMap<u64, Instant>,
    /// Every chunk of the target ever asked of it, and answered by it.
    asked: BTreeSet<u64>,
    answered: BTreeSet<u64>,
    /// False once it answered that it does not serve the target.
    not_serving: bool,
}

/// Where the target's member entries are, from the chunks verified so far
/// (see the module docs): the machine only looks at each chunk's first and
/// last key.
#[derive(Debug, Default)]
struct Members {
    /// The check was asked for (or cannot be made early: a resume from
    /// chunks whose ends an older build did not stage).
    checked: bool,
    /// Chunks verified (in this run, or held by a resume with their ends)
    /// until checked.
    known: BTreeSet<u64>,
    /// The highest chunk verified that no member entry precedes (chunk 0,
    /// or one whose first key sorts before `m`), and the lowest that none
    /// follows (the last chunk, or one whose last key sorts after `m`).
    from: Option<u64>,
    to: Option<u64>,
}

impl Members {
    /// Notes verified chunk `index` of `chunks`, with its ends; true once
    /// every member entry is in verified chunks (`from ..= to` all known).
    fn note(&mut self, index: u64, ends: ChunkEnds, chunks: u64) -> bool {
        if self.checked {
            return false;
        }
        self.known.insert(index);
        if index == 0 || ends.first.is_some_and(|f| f < MEMBER_TAG) {
            self.from = self.from.max(Some(index));
        }
        if index + 1 == chunks || ends.last.is_some_and(|l| l > MEMBER_TAG) {
            self.to = Some(self.to.map_or(index, |t| t.min(index)));
        }
        let (Some(from), Some(to)) = (self.from, self.to) else {
            return false;
        };
        if from > to || self.known.range(from..=to).count() as u64 != to - from + 1 {
            return false;
        }
        self.checked = true;
        self.known.clear();
        true
    }
}

#[derive(Debug)]
struct Target {
    manifest: Manifest,
    source: Option<PeerIndex>,
    have: Vec<bool>,
    held: u64,
    /// Neither held nor asked.
    todo: BTreeSet<u64>,
    confirmed: bool,
    /// Peers whose chunk failed while nothing was confirmed, with why:
    /// they or the manifest lie. No more requests to them until a chunk
    /// verifies (then they are demoted for it) or the manifest is blamed.
    failures: BTreeMap<PeerIndex, (&'static str, String)>,
    proposal: bool,
    proposal_asked: Option<(PeerIndex, Instant)>,
    proposal_tried: BTreeSet<PeerIndex>,
    members: Members,
}

impl Target {
    /// A target with the chunks `held` in (a resume), and whether those
    /// already hold every member entry (then the member check is due).
    fn new(
        manifest: Manifest,
        source: Option<PeerIndex>,
        held: &[HeldChunk],
        proposal: bool,
    ) -> (Self, bool) {
        let n = manifest.chunks();
        let mut have = vec![false; n as usize];
        let mut count = 0;
        let mut members = Members::default();
        let mut members_in = false;
        for h in held {
            let i = h.index;
            if i < n && !have[i as usize] {
                have[i as usize] = true;
                count += 1;
                match h.ends {
                    Some(ends) => members_in |= members.note(i, ends, n),
                    // Staged by an older build: checked once all are in.
                    None => members.checked = true,
                }
            }
        }

        let todo = (0..n).filter(|i| !have[*i as usize]).collect();
        let t = Target {
            manifest,
            source,
            have,
            held: count,
            todo,
            confirmed: count > 0,
            failures: BTreeMap::new(),
            proposal,
            proposal_asked: None,
            proposal_tried: BTreeSet::new(),
            members,
        };
        (t, members_in)
    }

    /// The next chunk to ask for: from the top down while the members are
    /// not checked, then the lowest.
    fn next(&mut self) -> Option<u64> {
        if self.members.checked {
            self.todo.pop_first()
        } else {
            self.todo.pop_last()
        }
    }
}

/// The fast-sync state machine; see the module docs.
#[derive(Debug)]
pub struct FastSync {
    cfg: Config,
    phase: Phase,
    peers: BTreeMap<PeerIndex, Peer>,
    /// Candidates of the last discovery not tried yet, best first.
    candidates: VecDeque<Candidate>,
    target: Option<Target>,
    /// (window, root) of a target dropped (its entry count or members
    /// refused): the same snapshot taken again keeps the peers' requests.
    dropped: Option<(u64, montana_vdf::Hash32)>,
    /// (window, root) of the last target replaced or dropped: chunks of it
    /// that come late are ignored, held against nobody.
    late: Option<(u64, montana_vdf::Hash32)>,
    rejected: BTreeMap<&'static str, u64>,
    /// Manifests at or below our tip (no offence).
    stale: u64,
    /// The start, or the last chunk verified.
    progress_at: Instant,
    /// A resume's chunks hold every member entry: the check is due before
    /// anything is fetched ([`FastSync::begin`]).
    check_due: bool,
}

impl FastSync {
    /// A new sync; `resume` is what staging holds, if anything.
    pub fn new(cfg: Config, resume: Option<Resume>, now: Instant) -> Self {
        let mut s = FastSync {
            cfg,
            phase: Phase::Discover {
                asked: BTreeSet::new(),
                offers: Vec::new(),
                deadline: now,
            },
            peers: BTreeMap::new(),
            candidates: VecDeque::new(),
            target: None,
            dropped: None,
            late: None,
            rejected: BTreeMap::new(),
            stale: 0,
            progress_at: now,
            check_due: false,
        };
        if let Some(r) = resume.filter(|r| r.manifest.window > s.cfg.above) {
            let (t, members_in) = Target::new(r.manifest, None, &r.held, r.proposal);
            s.target = Some(t);
            s.check_due = members_in;
            s.phase = Phase::Fetch;
        }
        s
    }

    /// What to do first, before any peer is asked: after a resume whose
    /// chunks already hold every member entry, the member check
    /// ([`Action::CheckMembers`]), so that a snapshot that leaves a change
    /// of the set out is refused before the rest is fetched. Once.
    pub fn begin(&mut self) -> Vec<Action> {
        match self.target_window() {
            Some(window) if std::mem::take(&mut self.check_due) => {
                vec![Action::CheckMembers { window }]
            }
            _ => Vec::new(),
        }
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    /// Manifests answered at or below our tip so far (ignored, held
    /// against nobody).
    pub fn stale_answers(&self) -> u64 {
        self.stale
    }

    /// The window being fetched, if one is accepted.
    pub fn target_window(&self) -> Option<u64> {
        self.target.as_ref().map(|t| t.manifest.window)
    }

    /// (chunks held, chunks in all) of the target.
    pub fn progress(&self) -> (u64, u64) {
        self.target
            .as_ref()
            .map_or((0, 0), |t| (t.held, t.manifest.chunks()))
    }

    /// Whether `peer` is connected as far as this machine knows.
    pub fn is_up(&self, peer: PeerIndex) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.up)
    }

    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Whether the node should give up and replay at `now`: the machine
    /// is discovering, every peer asked has answered (or timed out) with
    /// no snapshot above our tip, no candidate is left, and no chunk
    /// verified within `after` (nor since the start). A candidate waiting,
    /// being certified or fetched never counts against it.
    pub fn exhausted(&self, now: Instant, after: Duration) -> bool {
        let searching = match &self.phase {
            Phase::Discover { asked, offers, .. } => {
                asked.is_empty() && offers.is_empty() && self.candidates.is_empty()
            }
            _ => false,
        };
        searching && now.saturating_duration_since(self.progress_at) >= after
    }

    /// Whether `peer` is demoted at `now`.
    pub fn is_demoted(&self, peer: PeerIndex, now: Instant) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| p.demoted_until)
            .is_some_and(|t| t > now)
    }

    fn usable(&self, peer: PeerIndex, now: Instant) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.up && p.demoted_until.is_none_or(|t| t <= now))
    }

    pub fn peer_up(&mut self, peer: PeerIndex, now: Instant) -> Vec<Action> {
        self.peers.entry(peer).or_default().up = true;
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Discover {
                asked, deadline, ..
            } => {
                if asked.is_empty() {
                    *deadline = now + self.cfg.timeout;
                }
                asked.insert(peer);
                out.push(Action::Send {
                    peer,
                    msg: SyncMessage::GetManifest { window: 0 },
                });
            }
            Phase::Fetch => self.fill(now, &mut out),
            _ => {}
        }
        out
    }

    pub fn peer_down(&mut self, peer: PeerIndex, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.up = false;
        }
        self.requeue(peer);
        match &mut self.phase {
            Phase::Discover { asked, .. } => {
                asked.remove(&peer);
            }
            // Its certificates will not come: the next sender, no offence.
            Phase::Certify(c) if c.peer == peer => self.certify_next(now, &mut out),
            _ => {}
        }
        self.after_change(now, &mut out);
        out
    }

    /// Start (or restart) discovery: ask every usable peer. The
    /// candidates left from the last one are dropped.
    fn discover(&mut self, now: Instant, out: &mut Vec<Action>) {
        let peers: Vec<PeerIndex> = self
            .peers
            .keys()
            .copied()
            .filter(|p| self.usable(*p, now))
            .collect();
        for &peer in &peers {
            out.push(Action::Send {
                peer,
                msg: SyncMessage::GetManifest { window: 0 },
            });
        }
        self.candidates.clear();
        self.phase = Phase::Discover {
            asked: peers.into_iter().collect(),
            offers: Vec::new(),
            deadline: now + self.cfg.timeout,
        };
    }

    /// The end of a discovery round: its offers, ordered, become the
    /// candidates (see the module docs).
    fn rank(mut offers: Vec<Candidate>) -> VecDeque<Candidate> {
        let snapshot: Vec<_> = offers
            .iter()
            .map(|c| {
                (
                    c.manifest.header.hash(),
                    c.manifest.entries,
                    c.senders.len(),
                )
            })
            .collect();
        for (c, (h, n, _)) in offers.iter_mut().zip(&snapshot) {
            c.support = snapshot
                .iter()
                .filter(|(h2, n2, _)| h2 == h && n2 == n)
                .map(|(_, _, k)| k)
                .sum();
        }
        offers.sort_by(|a, b| {
            b.manifest
                .window
                .cmp(&a.manifest.window)
                .then(b.support.cmp(&a.support))
                .then(b.senders.len().cmp(&a.senders.len()))
                .then(a.senders.first().cmp(&b.senders.first()))
        });
        offers.into()
    }

    /// Certify the next candidate through its next usable sender;
    /// discovery again when none is left.
    fn next_candidate(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(mut c) = self.candidates.pop_front() {
            while let Some(peer) = c.senders.pop_first() {
                if self.usable(peer, now) {
                    return self.certify(c, peer, now, out);
                }
            }
        }
        self.discover(now, out);
    }

    fn certify(
        &mut self,
        candidate: Candidate,
        peer: PeerIndex,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Send {
            peer,
            msg: SyncMessage::GetCertificates {
                above: 0,
                below: candidate.manifest.window.saturating_add(1),
            },
        });
        self.phase = Phase::Certify(Box::new(Certifying {
            candidate,
            peer,
            deadline: now + self.cfg.timeout,
            until: now + self.cfg.certify_budget,
            set: self.cfg.genesis_set.clone(),
            before: self.cfg.genesis_set.clone(),
            after: 0,
            certificates: Vec::new(),
            bytes: 0,
        }));
    }

    /// The candidate being certified goes back to the front (with the
    /// senders left) and the next sender or candidate is taken.
    fn certify_next(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Phase::Certify(c) = std::mem::replace(&mut self.phase, Phase::Fetch) else {
            return;
        };
        self.candidates.push_front(c.candidate);
        self.next_candidate(now, out);
    }

    fn count(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    fn requeue(&mut self, peer: PeerIndex) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let back = std::mem::take(&mut p.in_flight);
        if let Some(t) = &mut self.target {
            for i in back.into_keys() {
                if !t.have[i as usize] {
                    t.todo.insert(i);
                }
            }
            if t.proposal_asked.is_some_and(|(p, _)| p == peer) {
                t.proposal_asked = None;
            }
        }
    }

    fn demote(&mut self, peer: PeerIndex, e: &SnapshotError, now: Instant, out: &mut Vec<Action>) {
        self.demote_for(peer, e.kind(), e.to_string(), now, out)
    }

    fn demote_for(
        &mut self,
        peer: PeerIndex,
        reason: &'static str,
        detail: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.count(reason);
        let p = self.peers.entry(peer).or_default();
        p.strikes += 1;
        let back = DEMOTION
            .saturating_mul(1 << (p.strikes - 1).min(16))
            .min(MAX_DEMOTION);
        p.demoted_until = Some(now + back);
        self.requeue(peer);
        out.push(Action::Demote {
            peer,
            reason,
            detail,
        });
    }

    /// A fast-sync message from `peer`. Requests (the serving side) are
    /// not handled here.
    pub fn on_message(&mut self, peer: PeerIndex, msg: SyncMessage, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            SyncMessage::Manifest(m) => self.on_manifest(peer, m, now, &mut out),
            SyncMessage::Certificates(cs) => self.on_certificates(peer, cs, now, &mut out),
            SyncMessage::Chunk(c) => self.on_chunk(peer, c, now, &mut out),
            _ => {}
        }
        self.after_change(now, &mut out);
        out
    }

    /// A node message from `peer`: the answer to [`Action::RequestProposal`]
    /// (Proposals, type 18); other messages are not the machine's.
    pub fn on_node_message(&mut self, peer: PeerIndex, msg: &Message, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Message::Proposals(ps) = msg {
            self.on_proposals(peer, ps, now, &mut out);
        }
        self.after_change(now, &mut out);
        out
    }

    fn on_manifest(
        &mut self,
        peer: PeerIndex,
        bytes: Option<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Phase::Discover { asked, .. } = &mut self.phase else {
            self.count("manifest_unknown");
            return;
        };
        if !asked.remove(&peer) {
            self.count("manifest_unknown");
            return;
        }
        let Some(bytes) = bytes else {
            return; // serves no snapshot
        };
        let m = match Manifest::decode(&bytes)
            .and_then(|m| m.check_bound(&self.cfg.network_id).map(|_| m))
        {
            Ok(m) => m,
            Err(e) => return self.demote(peer, &e, now, out),
        };
        if m.window <= self.cfg.above {
            // Its newest snapshot is older than our tip: no offence.
            self.stale += 1;
            return;
        }
        if let Phase::Discover { offers, .. } = &mut self.phase {
            match offers.iter_mut().find(|c| c.manifest == m) {
                Some(c) => {
                    c.senders.insert(peer);
                }
                None => offers.push(Candidate {
                    manifest: m,
                    senders: BTreeSet::from([peer]),
                    support: 0,
                }),
            }
        }
    }

    /// One page of certificates (SPEC 13.5): followed from where the last
    /// page left the set; an empty page ends the list, and the manifest's
    /// Cement must then verify against the set reached.
    fn on_certificates(
        &mut self,
        peer: PeerIndex,
        certs: Vec<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Phase::Certify(c) = &mut self.phase else {
            return;
        };
        if c.peer != peer {
            return;
        }
        let window = c.candidate.manifest.window;
        let page_bytes: usize = certs.iter().map(|c| c.len()).sum();
        let step = if certs.is_empty() {
            None
        } else if c.bytes + page_bytes > MAX_TRUST_BYTES {
            Some(Err(format!(
                "more than {} MiB of certificates",
                MAX_TRUST_BYTES >> 20
            )))
        } else {
            let decoded: Result<Vec<Certificate>, String> = certs
                .iter()
                .map(|c| Certificate::decode(c).map_err(|e| e.to_string()))
                .collect();
            Some(decoded.and_then(|cs| {
                // One at a time: the set before the last one is the set
                // that cemented the snapshot window if that one is its own.
                let (mut next, mut prev, mut last) = (c.set.clone(), c.before.clone(), c.after);
                for cert in &cs {
                    let (n, l) = follow(
                        &self.cfg.network_id,
                        next.clone(),
                        self.cfg.quorum,
                        last,
                        std::slice::from_ref(cert),
                        window,
                    )?;
                    prev = std::mem::replace(&mut next, n);
                    last = l;
                }
                Ok((cs, next, prev, last))
            }))
        };
        match step {
            Some(Ok((cs, next, prev, last))) => {
                c.set = next;
                c.before = prev;
                c.after = last;
                c.bytes += page_bytes;
                c.certificates.extend(cs);
                c.deadline = now + self.cfg.timeout;
                out.push(Action::Send {
                    peer,
                    msg: SyncMessage::GetCertificates {
                        above: last,
                        below: window.saturating_add(1),
                    },
                });
            }
            Some(Err(why)) => {
                self.demote(peer, &SnapshotError::Certificate(why), now, out);
                self.certify_next(now, out);
            }
            None => {
                let manifest = c.candidate.manifest.clone();
                // The set changed at the snapshot window itself: its Cement
                // is the set's before, and the certificate must be of the
                // cemented proposal.
                let own = c.after == manifest.window;
                let trust = Trust {
                    set: if own { c.before.clone() } else { c.set.clone() },
                    certificates: std::mem::take(&mut c.certificates),
                };
                if own
                    && trust
                        .certificates
                        .last()
                        .is_some_and(|c| c.header.hash() != manifest.header.hash())
                {
                    let why = format!(
                        "the certificate of window {} is of another proposal than the manifest's",
                        manifest.window
                    );
                    self.demote(peer, &SnapshotError::Certificate(why), now, out);
                    return self.certify_next(now, out);
                }
                if let Err(e) = manifest
                    .cement
                    .verify(
                        &self.cfg.network_id,
                        manifest.window,
                        &trust.set,
                        self.cfg.quorum,
                    )
                    .map_err(SnapshotError::Cement)
                {
                    self.demote(peer, &e, now, out);
                    return self.certify_next(now, out);
                }
                // Its other senders stay first in line, should the target
                // be refused later (members, entry count).
                if let Phase::Certify(c) = std::mem::replace(&mut self.phase, Phase::Fetch) {
                    if !c.candidate.senders.is_empty() {
                        self.candidates.push_front(c.candidate);
                    }
                }
                self.accept(peer, manifest, trust, now, out);
            }
        }
    }

    /// Takes `m` (certified) as the target; `trust` is what certified it,
    /// staged with it when it is a new target.
    fn accept(
        &mut self,
        peer: PeerIndex,
        m: Manifest,
        trust: Trust,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let same = self
            .target
            .as_ref()
            .is_some_and(|t| t.manifest.window == m.window && t.manifest.root == m.root);
        if same {
            let t = self.target.as_mut().expect("same target");
            t.source = t.source.or(Some(peer));
        } else {
            let prev = self
                .target
                .as_ref()
                .map(|t| (t.manifest.window, t.manifest.root))
                .or(self.dropped.take());
            if prev != Some((m.window, m.root)) {
                for p in self.peers.values_mut() {
                    p.in_flight.clear();
                    p.asked.clear();
                    p.answered.clear();
                }
                self.late = prev.or(self.late);
            }
            if let Some(old) = &self.target {
                out.push(Action::Note(format!(
                    "the snapshot of window {} is no longer served; starting over from the snapshot of window {}",
                    old.manifest.window, m.window
                )));
            }
            out.push(Action::Stage(Box::new(m.clone()), Box::new(trust)));
            self.target = Some(Target::new(m, Some(peer), &[], false).0);
        }
        for p in self.peers.values_mut() {
            p.not_serving = false;
        }
        self.phase = Phase::Fetch;
        self.fill(now, out);
    }

    fn on_chunk(
        &mut self,
        peer: PeerIndex,
        bytes: Option<Vec<u8>>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !matches!(self.phase, Phase::Fetch) || self.target.is_none() {
            return; // late answers after a switch
        }
        let Some(bytes) = bytes else {
            // Not served (pruned): its requests go back to the queue.
            self.requeue(peer);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.not_serving = true;
            }
            return;
        };
        let chunk = match Chunk::decode(&bytes) {
            Ok(c) => c,
            Err(e) => return self.demote(peer, &e, now, out),
        };
        let index = chunk.index;
        let of = Some((chunk.window, chunk.root));
        if of == self.late
            && of
                != self
                    .target
                    .as_ref()
                    .map(|t| (t.manifest.window, t.manifest.root))
        {
            return; // asked for the snapshot before this one
        }
        let p = self.peers.entry(peer).or_default();
        if !p.asked.contains(&index) {
            return self.demote(peer, &SnapshotError::ChunkUnrequested { index }, now, out);
        }
        if !p.answered.insert(index) {
            return self.demote(peer, &SnapshotError::ChunkDuplicate { index }, now, out);
        }
        p.in_flight.remove(&index);
        let t = self.target.as_mut().expect("checked");
        if t.have.get(index as usize).copied().unwrap_or(false) {
            return; // a late answer: the chunk came from another peer meanwhile
        }
        match chunk.verify(&t.manifest) {
            Ok(()) => {
                t.have[index as usize] = true;
                t.held += 1;
                t.todo.remove(&index);
                t.confirmed = true;
                let members_in = t.members.note(index, chunk.ends(), t.manifest.chunks());
                let window = t.manifest.window;
                // The entry count is right: the chunks that failed before
                // were bad.
                let failed = std::mem::take(&mut t.failures);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.strikes = 0;
                }
                self.progress_at = now;
                out.push(Action::StoreChunk(Box::new(chunk)));
                if members_in {
                    out.push(Action::CheckMembers { window });
                }
                for (p, (reason, detail)) in failed {
                    self.demote_for(p, reason, detail, now, out);
                }
            }
            Err(e) => {
                if !self
                    .peers
                    .values()
                    .any(|p| p.in_flight.contains_key(&index))
                {
                    t.todo.insert(index);
                }
                if !t.confirmed {
                    // Nothing verified yet: the chunk or the manifest's
                    // unsigned entry count lies. The source's own chunk
                    // settles it (it cannot make a chunk that verifies
                    // against a wrong count); another peer's waits for
                    // that, asked for nothing more meanwhile (two lying
                    // peers must not get an honest source blamed).
                    if t.source == Some(peer) {
                        return self.blame_manifest(now, out);
                    }
                    t.failures.insert(peer, (e.kind(), e.to_string()));
                    return self.after_change(now, out);
                }
                self.demote(peer, &e, now, out);
            }
        }
    }

    fn on_proposals(
        &mut self,
        peer: PeerIndex,
        ps: &[Proposal],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(t) = &mut self.target else { return };
        if t.proposal || t.proposal_asked.map(|(p, _)| p) != Some(peer) {
            return;
        }
        t.proposal_asked = None;
        let want = t.manifest.header.hash();
        match ps.iter().find(|p| p.window() == t.manifest.window) {
            Some(p) if p.hash() == want => {
                t.proposal = true;
                out.push(Action::StoreProposal(Box::new(p.clone())));
            }
            Some(_) => {
                let w = t.manifest.window;
                self.demote_for(
                    peer,
                    "proposal_mismatch",
                    format!("a proposal of window {w} that is not the cemented one"),
                    now,
                    out,
                );
            }
            None => {} // does not hold it; another peer is asked
        }
    }

    /// Time passes: timeouts, the end of discovery, demotions ending.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match &self.phase {
            Phase::Discover {
                deadline, asked, ..
            } if *deadline <= now => {
                let late: Vec<PeerIndex> = asked.iter().copied().collect();
                for p in late {
                    self.demote_for(p, "timeout", "no manifest answer".into(), now, &mut out);
                }
                if let Phase::Discover { asked, .. } = &mut self.phase {
                    asked.clear();
                }
            }
            Phase::Certify(c) if c.deadline <= now || c.until <= now => {
                let (p, why) = if c.until <= now {
                    let secs = self.cfg.certify_budget.as_secs();
                    (c.peer, format!("certificates not all in within {secs} s"))
                } else {
                    (c.peer, "no certificates answer".to_string())
                };
                self.demote_for(p, "timeout", why, now, &mut out);
                self.certify_next(now, &mut out);
            }
            Phase::Fetch => {
                let late: Vec<PeerIndex> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.in_flight.values().any(|t| *t + self.cfg.timeout <= now))
                    .map(|(i, _)| *i)
                    .collect();
                for p in late {
                    self.demote_for(
                        p,
                        "timeout",
                        "a chunk request went unanswered".into(),
                        now,
                        &mut out,
                    );
                }
                if let Some(t) = &mut self.target {
                    if t.proposal_asked.is_none() {
                        t.proposal_tried.clear();
                    }
                }
                if let Some((p, at)) = self.target.as_ref().and_then(|t| t.proposal_asked) {
                    if at + self.cfg.timeout <= now {
                        self.demote_for(
                            p,
                            "timeout",
                            "a proposal request went unanswered".into(),
                            now,
                            &mut out,
                        );
                    }
                }
            }
            _ => {}
        }
        self.after_change(now, &mut out);
        out
    }

    /// Moves on where the last event allows: end of discovery, install,
    /// a snapshot no longer served, more requests.
    fn after_change(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Discover {
            asked,
            offers,
            deadline,
        } = &mut self.phase
        {
            if !asked.is_empty() {
                return;
            }
            if !offers.is_empty() {
                self.candidates = Self::rank(std::mem::take(offers));
                return self.next_candidate(now, out);
            }
            if *deadline <= now {
                // Nobody serves a snapshot above our tip (yet): ask again
                // (with no usable peer, at the next peer_up or tick).
                self.discover(now, out);
            }
            return;
        }
        if !matches!(self.phase, Phase::Fetch) {
            return;
        }
        let Some(t) = &self.target else {
            return self.next_candidate(now, out);
        };
        if t.held == t.manifest.chunks() && t.proposal {
            out.push(Action::Install {
                window: t.manifest.window,
            });
            self.phase = Phase::Done;
            return;
        }
        // Chunks failed before any verified and no peer is left to settle
        // whether the manifest lies (the source is down or demoted, the
        // rest failed): the manifest is blamed.
        if !t.confirmed && !t.failures.is_empty() {
            let settles = self.peers.iter().any(|(i, p)| {
                self.usable(*i, now) && !p.not_serving && !t.failures.contains_key(i)
            });
            if !settles {
                return self.blame_manifest(now, out);
            }
        }
        // No peer that is up and not demoted serves the target any more.
        let any_up = self.peers.keys().any(|p| self.usable(*p, now));
        let serving = self
            .peers
            .iter()
            .any(|(i, p)| self.usable(*i, now) && !p.not_serving);
        if any_up && !serving {
            return self.discover(now, out);
        }
        self.fill(now, out);
    }

    /// The runtime found the target's members (staged at
    /// [`Action::CheckMembers`], or complete at [`Action::Install`]) not
    /// the set its certificates lead to (`why`): the certificates its
    /// source served left a change of the set out (or the state lies,
    /// which its root rules out). The target is dropped (the runtime
    /// clears staging), its source demoted (`certificate_missing`; counted
    /// alone after a resume, whose source is unknown) and the next sender
    /// or candidate is certified. Whatever the phase: the check may come
    /// after the event that asked for it moved the machine on (discovering
    /// again because no peer serves the target any more), and a target
    /// kept then would be taken again unstaged.
    pub fn members_refused(&mut self, window: u64, why: String, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.target_window() != Some(window) {
            return out;
        }
        let Some(t) = self.target.take() else {
            return out;
        };
        self.drop_target(&t);
        match t.source {
            Some(s) => self.demote_for(s, "certificate_missing", why, now, &mut out),
            None => self.count("certificate_missing"),
        }
        if matches!(self.phase, Phase::Fetch | Phase::Done) {
            self.phase = Phase::Fetch;
            self.next_candidate(now, &mut out);
        }
        self.after_change(now, &mut out);
        out
    }

    /// `t` is no longer the target: nothing is in flight any more (an
    /// answer that comes while another candidate is certified is not
    /// taken, so it must not count against the peer's slots or as a
    /// timeout), while the same snapshot taken again keeps what the peers
    /// were asked (a late chunk of it is an answer), and a late chunk of
    /// it is no offence if another snapshot is taken.
    fn drop_target(&mut self, t: &Target) {
        let key = (t.manifest.window, t.manifest.root);
        self.dropped = Some(key);
        self.late = Some(key);
        for p in self.peers.values_mut() {
            p.in_flight.clear();
        }
    }

    /// The target's manifest is taken for a liar: dropped, its source
    /// demoted (`manifest_unconfirmed`), and the next sender or candidate.
    fn blame_manifest(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(t) = self.target.take() else { return };
        self.drop_target(&t);
        match t.source {
            Some(s) => {
                let why = "no chunk of its snapshot verifies from any peer".to_string();
                self.demote_for(s, "manifest_unconfirmed", why, now, out);
            }
            None => self.count("manifest_unconfirmed"),
        }
        self.next_candidate(now, out);
    }

    fn fill(&mut self, now: Instant, out: &mut Vec<Action>) {
        let failed = |i: &PeerIndex| {
            self.target
                .as_ref()
                .is_some_and(|t| !t.confirmed && t.failures.contains_key(i))
        };
        let usable: Vec<PeerIndex> = self
            .peers
            .iter()
            .filter(|(i, p)| self.usable(**i, now) && !p.not_serving && !failed(i))
            .map(|(i, _)| *i)
            .collect();
        let limit = self.cfg.in_flight_per_peer;
        let Some(t) = &mut self.target else { return };
        if !t.proposal && t.proposal_asked.is_none() {
            // Each peer once; all tried: again after the next tick.
            let pick = usable
                .iter()
                .find(|p| !t.proposal_tried.contains(p))
                .copied();
            if let Some(peer) = pick {
                t.proposal_tried.insert(peer);
                t.proposal_asked = Some((peer, now));
                out.push(Action::RequestProposal {
                    peer,
                    window: t.manifest.window,
                });
            }
        }
        // Round-robin, one chunk per peer per pass, so that every peer
        // gets work.
        loop {
            let mut gave = false;
            for peer in &usable {
                let p = self.peers.get_mut(peer).expect("listed");
                if p.in_flight.len() >= limit {
                    continue;
                }
                let Some(index) = t.next() else {
                    return;
                };
                p.in_flight.insert(index, now);
                p.asked.insert(index);
                p.answered.remove(&index);
                out.push(Action::Send {
                    peer: *peer,
                    msg: SyncMessage::GetChunk {
                        window: t.manifest.window,
                        root: t.manifest.root,
                        index,
                    },
                });
                gave = true;
            }
            if !gave {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
