//! The syncing side of fast-sync, without I/O: events in (a peer up or
//! down, a message, the time), [`Action`]s out (send, stage, store a
//! verified chunk, install, demote, note). The runtime carries the actions
//! out in order; tests drive it with plain values.
//!
//! Rules (docs/SPEC.md 13.6):
//! - Discover: ask every usable peer for its newest manifest (GetManifest
//!   0) and take the highest window above our tip among the answers (once
//!   all answered, or after the request timeout).
//! - Certify: ask that peer for the membership certificates of the windows
//!   up to and including the manifest's w, page by page (each page asks
//!   for the windows after the last one received; an empty page ends the
//!   list), and follow them from the genesis set
//!   ([`super::certificate::follow`]); the manifest's Cement must verify
//!   against the set so obtained (the one before w's own certificate, if
//!   the set changed at w: that certificate must be of the manifest's
//!   proposal), for its header, whose state root is the manifest's. The
//!   set that cemented w and the certificates are staged with the manifest
//!   ([`Trust`]). Anything else refuses the manifest and demotes the
//!   peer that sent it (`manifest_*`, `certificate_broken`, `cement_*`,
//!   `cement_short_of_quorum`).
//! - Valid certificates do not show that none was left out (G -> G + J
//!   left out, a Cement of w rebuilt from G's precommits verifies against
//!   G). The state's member set, committed to by the root, does: once
//!   every chunk is in, the runtime checks that it is the set the
//!   certificates lead to after w (`Staging::untrusted`) before installing;
//!   if not, [`FastSync::install_refused`] drops the target, demotes its
//!   source (`certificate_missing`) and discovers again.
//! - Fetch: stage the accepted manifest (dropping anything staged for
//!   another snapshot), ask for the window's proposal (checked against the
//!   header's hash), and ask for chunks from every usable peer in
//!   parallel, at most `in_flight_per_peer` outstanding per peer, lowest
//!   missing index first, each chunk from one peer at a time. A chunk is
//!   verified on arrival ([`super::format::Chunk::verify`]) and handed to
//!   [`Action::StoreChunk`] at once: the machine holds no entries.
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
//!   demoted) and the snapshot is discovered again.
//! - A peer answering GetChunk with "not served" no longer serves the
//!   snapshot (pruned); when no usable peer serves it, the machine
//!   discovers again and, if the best snapshot is another one, says so
//!   ([`Action::Note`]) and starts on it.
//! - Resume: built from what staging holds ([`Resume`]), the machine asks
//!   only for the chunks not in.
//! - Done: every chunk and the proposal in: [`Action::Install`] (or
//!   [`FastSync::install_refused`], above).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::consensus::active::{ActiveSet, Quorum};
use crate::messages::Message;
use crate::proposal::Proposal;

use super::certificate::{follow, Certificate, Trust};
use super::format::{Chunk, Manifest, SnapshotError};
use super::messages::SyncMessage;

pub type PeerIndex = u16;

/// Most certificate bytes one sync follows (a certificate per change of
/// the active set since the genesis; beyond this the node replays).
pub const MAX_TRUST_BYTES: usize = 64 << 20;
/// First demotion; doubles per strike.
pub const DEMOTION: Duration = Duration::from_secs(5);
/// Longest demotion.
pub const MAX_DEMOTION: Duration = Duration::from_secs(120);

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
}

/// What staging held when the node started.
#[derive(Clone, Debug)]
pub struct Resume {
    pub manifest: Manifest,
    pub held: Vec<u64>,
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

#[derive(Debug)]
enum Phase {
    Discover {
        asked: BTreeSet<PeerIndex>,
        best: Option<(PeerIndex, Manifest)>,
        deadline: Instant,
    },
    Certify {
        peer: PeerIndex,
        manifest: Manifest,
        deadline: Instant,
        /// The set in force after window `after`, followed from the
        /// genesis through `certificates` (verified so far), and the one
        /// in force at `after` (before its certificate).
        set: ActiveSet,
        before: ActiveSet,
        after: u64,
        certificates: Vec<Certificate>,
        bytes: usize,
    },
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
}

impl Target {
    fn new(manifest: Manifest, source: Option<PeerIndex>, held: &[u64], proposal: bool) -> Self {
        let n = manifest.chunks();
        let mut have = vec![false; n as usize];
        let mut count = 0;
        for &i in held {
            if i < n && !have[i as usize] {
                have[i as usize] = true;
                count += 1;
            }
        }
        let todo = (0..n).filter(|i| !have[*i as usize]).collect();
        Target {
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
        }
    }
}

/// The fast-sync state machine; see the module docs.
#[derive(Debug)]
pub struct FastSync {
    cfg: Config,
    phase: Phase,
    peers: BTreeMap<PeerIndex, Peer>,
    target: Option<Target>,
    /// (window, root) of a target dropped for a lying entry count: the
    /// same snapshot with the right count keeps the peers' requests.
    dropped: Option<(u64, montana_vdf::Hash32)>,
    rejected: BTreeMap<&'static str, u64>,
}

impl FastSync {
    /// A new sync; `resume` is what staging holds, if anything.
    pub fn new(cfg: Config, resume: Option<Resume>, now: Instant) -> Self {
        let mut s = FastSync {
            cfg,
            phase: Phase::Discover {
                asked: BTreeSet::new(),
                best: None,
                deadline: now,
            },
            peers: BTreeMap::new(),
            target: None,
            dropped: None,
            rejected: BTreeMap::new(),
        };
        if let Some(r) = resume.filter(|r| r.manifest.window > s.cfg.above) {
            s.target = Some(Target::new(r.manifest, None, &r.held, r.proposal));
            s.phase = Phase::Fetch;
        }
        s
    }

    /// Rejections so far, by reason.
    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
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
        if let Phase::Discover { asked, .. } = &mut self.phase {
            asked.remove(&peer);
        }
        self.after_change(now, &mut out);
        out
    }

    /// Start (or restart) discovery: ask every usable peer.
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
        self.phase = Phase::Discover {
            asked: peers.into_iter().collect(),
            best: None,
            deadline: now + self.cfg.timeout,
        };
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
            let e = SnapshotError::ManifestStale {
                window: m.window,
                tip: self.cfg.above,
            };
            return self.demote(peer, &e, now, out);
        }
        if let Phase::Discover { best, .. } = &mut self.phase {
            if best.as_ref().is_none_or(|(_, b)| m.window > b.window) {
                *best = Some((peer, m));
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
        let Phase::Certify {
            peer: p,
            manifest,
            set,
            before,
            after,
            certificates,
            bytes,
            deadline,
        } = &mut self.phase
        else {
            return;
        };
        if *p != peer {
            return;
        }
        let page_bytes: usize = certs.iter().map(|c| c.len()).sum();
        let step = if certs.is_empty() {
            None
        } else if *bytes + page_bytes > MAX_TRUST_BYTES {
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
                let (mut next, mut prev, mut last) = (set.clone(), before.clone(), *after);
                for c in &cs {
                    let (n, l) = follow(
                        &self.cfg.network_id,
                        next.clone(),
                        self.cfg.quorum,
                        last,
                        std::slice::from_ref(c),
                        manifest.window,
                    )?;
                    prev = std::mem::replace(&mut next, n);
                    last = l;
                }
                Ok((cs, next, prev, last))
            }))
        };
        match step {
            Some(Ok((cs, next, prev, last))) => {
                *set = next;
                *before = prev;
                *after = last;
                *bytes += page_bytes;
                certificates.extend(cs);
                *deadline = now + self.cfg.timeout;
                out.push(Action::Send {
                    peer,
                    msg: SyncMessage::GetCertificates {
                        above: last,
                        below: manifest.window.saturating_add(1),
                    },
                });
            }
            Some(Err(why)) => {
                self.demote(peer, &SnapshotError::Certificate(why), now, out);
                self.discover(now, out);
            }
            None => {
                let manifest = manifest.clone();
                // The set changed at the snapshot window itself: its Cement
                // is the set's before, and the certificate must be of the
                // cemented proposal.
                let own = *after == manifest.window;
                let trust = Trust {
                    set: if own { before.clone() } else { set.clone() },
                    certificates: std::mem::take(certificates),
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
                    return self.discover(now, out);
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
                    return self.discover(now, out);
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
            for p in self
                .peers
                .values_mut()
                .filter(|_| prev != Some((m.window, m.root)))
            {
                p.in_flight.clear();
                p.asked.clear();
                p.answered.clear();
            }
            if let Some(old) = &self.target {
                out.push(Action::Note(format!(
                    "the snapshot of window {} is no longer served; starting over from the snapshot of window {}",
                    old.manifest.window, m.window
                )));
            }
            out.push(Action::Stage(Box::new(m.clone()), Box::new(trust)));
            self.target = Some(Target::new(m, Some(peer), &[], false));
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
                // The entry count is right: the chunks that failed before
                // were bad.
                let failed = std::mem::take(&mut t.failures);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.strikes = 0;
                }
                out.push(Action::StoreChunk(Box::new(chunk)));
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
            Phase::Certify { peer, deadline, .. } if *deadline <= now => {
                let p = *peer;
                self.demote_for(p, "timeout", "no certificates answer".into(), now, &mut out);
                self.discover(now, &mut out);
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
            best,
            deadline,
        } = &mut self.phase
        {
            if asked.is_empty() {
                match best.take() {
                    Some((peer, manifest)) => {
                        out.push(Action::Send {
                            peer,
                            msg: SyncMessage::GetCertificates {
                                above: 0,
                                below: manifest.window.saturating_add(1),
                            },
                        });
                        self.phase = Phase::Certify {
                            peer,
                            manifest,
                            deadline: now + self.cfg.timeout,
                            set: self.cfg.genesis_set.clone(),
                            before: self.cfg.genesis_set.clone(),
                            after: 0,
                            certificates: Vec::new(),
                            bytes: 0,
                        };
                    }
                    None if *deadline <= now => {
                        // Nobody serves a snapshot above our tip (yet): ask again.
                        self.discover(now, out);
                        if let Phase::Discover { asked, .. } = &self.phase {
                            if asked.is_empty() {
                                // No usable peer: wait for one (peer_up) or a tick.
                            }
                        }
                    }
                    None => {}
                }
            }
            return;
        }
        if !matches!(self.phase, Phase::Fetch) {
            return;
        }
        let Some(t) = &self.target else {
            return self.discover(now, out);
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

    /// The runtime refused to install the complete target (`why`): its
    /// state's members are not the set its certificates lead to, so the
    /// certificates the source served left a change of the set out (or the
    /// state lies, which its root rules out). The target is dropped, its
    /// source demoted (`certificate_missing`; counted alone after a
    /// resume, whose source is unknown) and discovery starts again.
    pub fn install_refused(&mut self, why: String, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !matches!(self.phase, Phase::Done) {
            return out;
        }
        let Some(t) = self.target.take() else {
            return out;
        };
        match t.source {
            Some(s) => self.demote_for(s, "certificate_missing", why, now, &mut out),
            None => self.count("certificate_missing"),
        }
        self.discover(now, &mut out);
        self.after_change(now, &mut out);
        out
    }

    /// The target's manifest is taken for a liar: dropped, its source
    /// demoted (`manifest_unconfirmed`), and discovery again.
    fn blame_manifest(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(t) = self.target.take() else { return };
        self.dropped = Some((t.manifest.window, t.manifest.root));
        match t.source {
            Some(s) => {
                let why = "no chunk of its snapshot verifies from any peer".to_string();
                self.demote_for(s, "manifest_unconfirmed", why, now, out);
            }
            None => self.count("manifest_unconfirmed"),
        }
        self.discover(now, out);
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
                let Some(index) = t.todo.pop_first() else {
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
