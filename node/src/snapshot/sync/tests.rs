//! The fast-sync machine against simulated peers (no sockets): honest,
//! lying, silent and pruning peers, with a real staging database.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::consensus::active::tests::set_of;
use crate::node::fastsync::GIVE_UP_AFTER;
use crate::snapshot::format::tests::{cement, fixture, Fixture, NET};
use crate::snapshot::format::CHUNK_SIZE;
use crate::snapshot::staging::Staging;

/// How a simulated peer answers.
#[derive(Clone, Default)]
struct PeerSim {
    manifest: Option<Vec<u8>>,
    certificates: Vec<Vec<u8>>,
    window: u64,
    root: montana_vdf::Hash32,
    chunks: Vec<Vec<u8>>,
    proposal: Option<Proposal>,
    /// Chunk requests get no answer.
    silent: bool,
    /// Certificates per answer (0: as many as a message holds).
    page: usize,
    /// Certificate pages come this late (delivered by [`Sim::advance`]).
    certificates_after: Option<Duration>,
}

fn honest(f: &Fixture) -> PeerSim {
    PeerSim {
        manifest: Some(f.manifest.encode()),
        certificates: vec![],
        window: f.manifest.window,
        root: f.manifest.root,
        chunks: (0..f.manifest.chunks())
            .map(|i| f.chunk(i).encode())
            .collect(),
        proposal: Some(f.proposal.clone()),
        silent: false,
        page: 0,
        certificates_after: None,
    }
}

/// Serves `f`'s manifest but chunks with one value changed.
fn corrupting(f: &Fixture) -> PeerSim {
    let mut p = honest(f);
    p.chunks = (0..f.manifest.chunks())
        .map(|i| {
            let mut c = f.chunk(i);
            c.entries[0].1 = vec![0xEE; 8];
            c.encode()
        })
        .collect();
    p
}

impl PeerSim {
    fn answer(&self, msg: &SyncMessage) -> Option<SyncMessage> {
        match msg {
            SyncMessage::GetManifest { window: 0 } => {
                Some(SyncMessage::Manifest(self.manifest.clone()))
            }
            SyncMessage::GetCertificates { above, below } => {
                // The windows asked for; bytes that do not decode are sent
                // as they are (a broken certificate).
                let page = if self.page == 0 { 64 } else { self.page };
                Some(SyncMessage::Certificates(
                    self.certificates
                        .iter()
                        .filter(|c| {
                            Certificate::decode(c)
                                .map_or(true, |x| x.window() > *above && x.window() < *below)
                        })
                        .take(page)
                        .cloned()
                        .collect(),
                ))
            }
            SyncMessage::GetChunk {
                window,
                root,
                index,
            } => {
                if self.silent {
                    return None;
                }
                if *window != self.window || *root != self.root {
                    return Some(SyncMessage::Chunk(None));
                }
                Some(SyncMessage::Chunk(
                    self.chunks.get(*index as usize).cloned(),
                ))
            }
            _ => None,
        }
    }
}

#[derive(Default)]
struct Log {
    /// (peer, chunk index) of every chunk request.
    asked: Vec<(PeerIndex, u64)>,
    /// Chunk index -> the peer whose chunk was stored.
    stored: BTreeMap<u64, PeerIndex>,
    demoted: Vec<(PeerIndex, &'static str)>,
    notes: Vec<String>,
    staged: Vec<u64>,
    installed: Option<u64>,
    most_in_flight: usize,
    /// What the staged target was trusted through.
    trust: Option<Trust>,
    /// GetCertificates requests sent.
    certificate_pages: usize,
    /// GetManifest requests sent (discovery rounds times peers).
    manifests_asked: usize,
    /// Snapshots refused for their members (staging's `untrusted`), and
    /// the chunk requests sent before each.
    refused: Vec<String>,
    refused_after: Vec<usize>,
    /// When the runtime would have given up ([`Sim::advance`]).
    gave_up: Option<Instant>,
}

/// An answer on its way to the machine.
enum Reply {
    Sync(PeerIndex, SyncMessage),
    Node(PeerIndex, Message),
}

struct Sim {
    peers: BTreeMap<PeerIndex, PeerSim>,
    staging: Staging,
    log: Log,
    /// Stop (a kill) once this many chunks are stored.
    kill_after: Option<usize>,
    outstanding: BTreeMap<PeerIndex, usize>,
    /// Late answers: (when, peer, answer).
    later: Vec<(Instant, PeerIndex, SyncMessage)>,
}

impl Sim {
    fn new(dir: &std::path::Path, peers: Vec<PeerSim>) -> Self {
        Sim {
            peers: peers
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i as u16 + 1, p))
                .collect(),
            staging: Staging::open(dir).unwrap(),
            log: Log::default(),
            kill_after: None,
            outstanding: BTreeMap::new(),
            later: Vec::new(),
        }
    }

    /// Brings every peer up and runs until nothing is left to do (or the
    /// kill). Returns false when killed.
    fn start(&mut self, s: &mut FastSync, now: Instant) -> bool {
        let ids: Vec<PeerIndex> = self.peers.keys().copied().collect();
        // As the runtime does: the machine's first actions (the member
        // check of a resume) carried out before any peer is up.
        let first: VecDeque<(PeerIndex, Action)> = s.begin().into_iter().map(|a| (0, a)).collect();
        if !first.is_empty() && !self.run(s, first, now) {
            return false;
        }
        let mut q = VecDeque::new();
        for p in ids {
            q.extend(s.peer_up(p, now).into_iter().map(|a| (p, a)));
        }
        self.run(s, q, now)
    }

    /// Carries out `q` as the runtime does (node/fastsync.rs): every
    /// action of one event in order, the peers' answers then handed to
    /// the machine one at a time, in the order asked. Returns false when
    /// killed.
    fn run(
        &mut self,
        s: &mut FastSync,
        mut q: VecDeque<(PeerIndex, Action)>,
        now: Instant,
    ) -> bool {
        let mut replies = VecDeque::new();
        loop {
            while let Some((from, a)) = q.pop_front() {
                if !self.act(s, from, a, &mut q, &mut replies, now) {
                    return false;
                }
            }
            let Some(r) = replies.pop_front() else {
                return true;
            };
            let (peer, out) = match r {
                Reply::Sync(peer, m) => (peer, s.on_message(peer, m, now)),
                Reply::Node(peer, m) => (peer, s.on_node_message(peer, &m, now)),
            };
            q.extend(out.into_iter().map(|a| (peer, a)));
        }
    }

    fn act(
        &mut self,
        s: &mut FastSync,
        from: PeerIndex,
        a: Action,
        q: &mut VecDeque<(PeerIndex, Action)>,
        replies: &mut VecDeque<Reply>,
        now: Instant,
    ) -> bool {
        match a {
            Action::Send { peer, msg } => {
                match msg {
                    SyncMessage::GetCertificates { .. } => self.log.certificate_pages += 1,
                    SyncMessage::GetManifest { .. } => self.log.manifests_asked += 1,
                    SyncMessage::GetChunk { index, .. } => {
                        self.log.asked.push((peer, index));
                        *self.outstanding.entry(peer).or_default() += 1;
                        let total: usize = self.outstanding.values().sum();
                        self.log.most_in_flight = self.log.most_in_flight.max(total);
                    }
                    _ => {}
                }
                let sim = &self.peers[&peer];
                let late = sim
                    .certificates_after
                    .filter(|_| matches!(msg, SyncMessage::GetCertificates { .. }));
                if let Some(reply) = sim.answer(&msg) {
                    if matches!(msg, SyncMessage::GetChunk { .. }) {
                        *self.outstanding.get_mut(&peer).unwrap() -= 1;
                    }
                    match late {
                        Some(after) => self.later.push((now + after, peer, reply)),
                        None => replies.push_back(Reply::Sync(peer, reply)),
                    }
                }
            }
            Action::RequestProposal { peer, .. } => {
                let ps: Vec<Proposal> = self.peers[&peer].proposal.clone().into_iter().collect();
                replies.push_back(Reply::Node(peer, Message::Proposals(ps)));
            }
            Action::Stage(m, t) => {
                self.log.staged.push(m.window);
                self.log.stored.clear();
                self.log.trust = Some(*t.clone());
                self.staging.reset(&m, &t).unwrap();
            }
            Action::StoreChunk(c) => {
                self.staging.put_chunk(&c).unwrap();
                assert!(
                    self.log.stored.insert(c.index, from).is_none(),
                    "chunk {} stored twice",
                    c.index
                );
                if self.kill_after == Some(self.log.stored.len()) {
                    return false;
                }
            }
            // As the runtime does (node/fastsync.rs).
            Action::CheckMembers { .. } => {
                self.check_members(s, q, now);
            }
            Action::StoreProposal(p) => self.staging.put_proposal(&p).unwrap(),
            Action::Install { window } => {
                assert!(
                    self.staging.complete().unwrap(),
                    "install only when complete"
                );
                if !self.check_members(s, q, now) {
                    self.log.installed = Some(window);
                }
            }
            Action::Demote { peer, reason, .. } => self.log.demoted.push((peer, reason)),
            Action::Note(n) => self.log.notes.push(n),
        }
        true
    }

    /// The runtime's check of the staged members; true if refused.
    fn check_members(
        &mut self,
        s: &mut FastSync,
        q: &mut VecDeque<(PeerIndex, Action)>,
        now: Instant,
    ) -> bool {
        let Some(why) = self.staging.untrusted().unwrap() else {
            return false;
        };
        self.log.refused.push(why.clone());
        self.log.refused_after.push(self.log.asked.len());
        let window = self.staging.target().map_or(0, |m| m.window);
        self.staging.clear().unwrap();
        q.retain(|(_, a)| !a.is_for(window));
        q.extend(
            s.members_refused(window, why, now)
                .into_iter()
                .map(|a| (0, a)),
        );
        true
    }

    fn tick(&mut self, s: &mut FastSync, now: Instant) -> bool {
        let q = s.tick(now).into_iter().map(|a| (0, a)).collect();
        self.run(s, q, now)
    }

    /// Time passes from `from` to `to` a second at a time: the late
    /// answers due are delivered, then the machine ticks, until it is
    /// done. Returns the time it was done at, if it was.
    fn advance(&mut self, s: &mut FastSync, from: Instant, to: Instant) -> Option<Instant> {
        let mut now = from;
        while now < to && !s.is_done() {
            now += Duration::from_secs(1);
            let (due, rest) = std::mem::take(&mut self.later)
                .into_iter()
                .partition::<Vec<_>, _>(|(at, _, _)| *at <= now);
            self.later = rest;
            for (_, peer, reply) in due {
                let q = s
                    .on_message(peer, reply, now)
                    .into_iter()
                    .map(|a| (peer, a))
                    .collect();
                self.run(s, q, now);
            }
            self.tick(s, now);
            if self.log.gave_up.is_none() && s.exhausted(now, GIVE_UP_AFTER) {
                self.log.gave_up = Some(now);
            }
        }
        s.is_done().then_some(now)
    }
}

fn config(f: &Fixture) -> Config {
    Config {
        network_id: NET,
        genesis_set: f.set.clone(),
        quorum: Quorum::default(),
        above: 0,
        in_flight_per_peer: 2,
        timeout: Duration::from_secs(10),
        certify_budget: Duration::from_secs(30),
    }
}

/// 10 chunks (the last one short).
const N: u64 = 9 * CHUNK_SIZE + 100;

#[test]
fn honest_peers_serve_in_parallel_and_the_snapshot_completes() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let mut sim = Sim::new(dir.path(), vec![honest(&f), honest(&f), honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert!(s.is_done());
    assert_eq!(sim.log.staged, vec![7]);
    assert_eq!(sim.log.stored.len(), 10);
    assert_eq!(sim.log.asked.len(), 10, "each chunk asked once");
    let from: BTreeSet<PeerIndex> = sim.log.stored.values().copied().collect();
    assert_eq!(from.len(), 3, "every peer served chunks");
    assert!(sim.log.most_in_flight <= 3 * 2);
    assert!(sim.log.demoted.is_empty());
    assert!(s.rejected().is_empty());
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(staged, f.entries);
}

#[test]
fn a_peer_serving_corrupted_chunks_is_demoted_and_the_honest_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    // Peer 1 (honest) is asked first and its manifest taken; peer 2 lies.
    let mut sim = Sim::new(dir.path(), vec![honest(&f), corrupting(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert!(
        sim.log.demoted.contains(&(2, "chunk_bad_proof")),
        "{:?}",
        sim.log.demoted
    );
    assert!(s.is_demoted(2, now));
    assert!(!s.is_demoted(1, now));
    assert!(
        sim.log.stored.values().all(|p| *p == 1),
        "nothing from the liar stored"
    );
    assert!(s.rejected()["chunk_bad_proof"] >= 1);
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(
        staged, f.entries,
        "the staged state is exactly the snapshot"
    );
}

/// A manifest of window 9 over `f`'s entries, with another cement.
fn higher(f: &Fixture, signers: &[&crate::keys::NodeKeys]) -> PeerSim {
    higher_at(f, 9, signers)
}

/// A manifest of `window` over `f`'s entries, with another cement.
fn higher_at(f: &Fixture, window: u64, signers: &[&crate::keys::NodeKeys]) -> PeerSim {
    let p = crate::snapshot::format::tests::proposal(&f.keys[0], window, f.manifest.root);
    let mut m = f.manifest.clone();
    m.window = window;
    m.header = p.header.clone();
    m.cement = cement(&p, signers);
    let mut sim = honest(f);
    sim.manifest = Some(m.encode());
    sim.window = window;
    sim.proposal = Some(p);
    sim
}

#[test]
fn hostile_manifests_are_refused_with_their_reason() {
    let check = |make: &dyn Fn(&Fixture) -> PeerSim, reason: &str| {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture(3 * CHUNK_SIZE, 7);
        let now = Instant::now();
        let mut s = FastSync::new(config(&f), None, now);
        let mut sim = Sim::new(dir.path(), vec![make(&f), honest(&f)]);
        sim.start(&mut s, now);
        assert_eq!(
            sim.log.installed,
            Some(7),
            "{reason}: the honest snapshot completes"
        );
        assert!(
            sim.log.demoted.contains(&(1, reason)),
            "{reason}: {:?}",
            sim.log.demoted
        );
        assert!(s.rejected().contains_key(reason), "{reason}");
        assert!(!sim.log.stored.is_empty());
    };
    // A cement short of quorum (2 of 4).
    check(
        &|f| higher(f, &[&f.keys[0], &f.keys[1]]),
        "cement_short_of_quorum",
    );
    // A forged active set: a quorum of keys that were never members.
    let (_, strangers) = set_of(3);
    check(
        &|f| higher(f, &[&strangers[0], &strangers[1], &strangers[2]]),
        "cement_non_member",
    );
    // Bytes that do not decode; a root the header does not carry.
    check(
        &|f| {
            let mut p = honest(f);
            p.manifest = Some(vec![b'M', b'T', b'S', b'M', 1, 0, 0]);
            p
        },
        "manifest_malformed",
    );
    check(
        &|f| {
            let mut m = f.manifest.clone();
            m.root = montana_vdf::Hash32([1; 32]);
            let mut p = honest(f);
            p.manifest = Some(m.encode());
            p
        },
        "manifest_unbound",
    );
    // A broken membership certificate.
    check(
        &|f| {
            let mut p = higher(f, &[&f.keys[0], &f.keys[1], &f.keys[2]]);
            p.certificates = vec![vec![1, 2, 3]];
            p
        },
        "certificate_broken",
    );
}

/// A peer whose newest snapshot is at or below our tip did nothing wrong:
/// its manifest is ignored (counted apart), the peer neither demoted nor
/// counted as refused, and the peer that serves a newer one is synced
/// from (before the fix: `manifest_stale`, the honest peer demoted).
#[test]
fn a_stale_manifest_is_ignored_and_not_held_against_its_peer() {
    let f = fixture(3 * CHUNK_SIZE, 7);
    let old = crate::snapshot::format::tests::snapshot_of(
        3 * CHUNK_SIZE,
        5,
        &f.set,
        &[&f.keys[0], &f.keys[1], &f.keys[2]],
    );
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut cfg = config(&f);
    cfg.above = 6; // we already hold window 6
    let mut s = FastSync::new(cfg, None, now);
    let mut sim = Sim::new(dir.path(), vec![honest(&old), honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert!(sim.log.demoted.is_empty(), "{:?}", sim.log.demoted);
    assert!(!s.is_demoted(1, now));
    assert!(s.rejected().is_empty(), "{:?}", s.rejected());
    assert_eq!(s.stale_answers(), 1);
    // Alone, it is asked again at the next round, never demoted.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&f);
    cfg.above = 7;
    let mut s = FastSync::new(cfg, None, now);
    let mut sim = Sim::new(dir.path(), vec![honest(&f)]);
    sim.start(&mut s, now);
    sim.advance(&mut s, now, now + Duration::from_secs(25));
    assert_eq!(sim.log.installed, None);
    assert!(sim.log.asked.is_empty());
    assert!(sim.log.demoted.is_empty(), "{:?}", sim.log.demoted);
    assert!(s.rejected().is_empty(), "{:?}", s.rejected());
    assert_eq!(s.stale_answers(), 3, "asked at 0, 10 and 20 s");
}

#[test]
fn a_manifest_with_a_lying_entry_count_is_blamed_not_the_honest_peers() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    // Peer 1 offers the right cement and root but one entry more.
    let mut liar = honest(&f);
    let mut m = f.manifest.clone();
    m.entries += 1;
    liar.manifest = Some(m.encode());
    liar.silent = true; // it serves no chunks itself
                        // Peer 2 offers the honest manifest (one sender each: the lower
                        // sender, the liar, is certified first); peer 3 serves chunks only.
    let mut chunks_only = honest(&f);
    chunks_only.manifest = None;
    let mut sim = Sim::new(dir.path(), vec![liar, honest(&f), chunks_only]);
    sim.start(&mut s, now);
    // The honest peers' chunks fail against the wrong count; they are held
    // against nobody until the source, which would settle it, times out.
    assert_eq!(sim.log.installed, None);
    assert!(sim.log.demoted.is_empty(), "{:?}", sim.log.demoted);
    sim.tick(&mut s, now + Duration::from_secs(11));
    assert!(
        sim.log.demoted.contains(&(1, "manifest_unconfirmed")),
        "{:?}",
        sim.log.demoted
    );
    assert!(
        !sim.log.demoted.iter().any(|(p, _)| *p != 1),
        "{:?}",
        sim.log.demoted
    );
    // The next candidate, without a new discovery round: the honest
    // manifest is taken.
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.staged.len(), 2);
    assert_eq!(sim.log.manifests_asked, 3, "one discovery round");
}

#[test]
fn a_silent_peer_times_out_and_its_chunks_go_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let mut silent = honest(&f);
    silent.silent = true;
    let mut sim = Sim::new(dir.path(), vec![honest(&f), silent]);
    sim.start(&mut s, now);
    assert_eq!(
        sim.log.installed, None,
        "two chunks wait on the silent peer"
    );
    assert!(sim.tick(&mut s, now + Duration::from_secs(5)));
    assert_eq!(sim.log.installed, None, "not yet timed out");
    sim.tick(&mut s, now + Duration::from_secs(11));
    assert_eq!(sim.log.demoted, vec![(2, "timeout")]);
    assert_eq!(sim.log.installed, Some(7));
    assert!(sim.log.stored.values().all(|p| *p == 1));
}

#[test]
fn a_killed_sync_resumes_without_fetching_verified_chunks_again() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let first: BTreeSet<u64>;
    {
        let mut s = FastSync::new(config(&f), None, now);
        let mut sim = Sim::new(dir.path(), vec![honest(&f), honest(&f)]);
        sim.kill_after = Some(4);
        assert!(!sim.start(&mut s, now), "killed");
        first = sim.log.stored.keys().copied().collect();
        assert_eq!(first.len(), 4);
    } // the machine and the staging handle are gone
    let staging = Staging::open(dir.path()).unwrap();
    let held = staging.held_chunks().unwrap();
    assert_eq!(held.iter().map(|h| h.index).collect::<BTreeSet<_>>(), first);
    let resume = Resume {
        manifest: staging.target().unwrap().clone(),
        held,
        proposal: staging.proposal().unwrap().is_some(),
    };
    drop(staging);
    let mut s = FastSync::new(config(&f), Some(resume), now);
    assert_eq!(s.progress(), (4, 10));
    let mut sim = Sim::new(dir.path(), vec![honest(&f), honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert!(sim.log.staged.is_empty(), "the staged snapshot is kept");
    let again: BTreeSet<u64> = sim.log.asked.iter().map(|(_, i)| *i).collect();
    assert!(
        again.is_disjoint(&first),
        "verified chunks are not fetched again"
    );
    assert_eq!(again.len(), 6);
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(staged, f.entries);
}

#[test]
fn a_pruned_snapshot_is_replaced_by_the_newer_one_and_the_node_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let old = fixture(N, 7);
    // The peers moved on: they serve window 107 only (same keys, so the
    // same active set).
    let new = crate::snapshot::format::tests::snapshot_of(
        N + 5,
        107,
        &old.set,
        &[&old.keys[0], &old.keys[1], &old.keys[2]],
    );
    let now = Instant::now();
    {
        let mut s = FastSync::new(config(&old), None, now);
        let mut sim = Sim::new(dir.path(), vec![honest(&old)]);
        sim.kill_after = Some(3);
        assert!(!sim.start(&mut s, now));
    }
    let staging = Staging::open(dir.path()).unwrap();
    let resume = Resume {
        manifest: staging.target().unwrap().clone(),
        held: staging.held_chunks().unwrap(),
        proposal: false,
    };
    drop(staging);
    let mut s = FastSync::new(config(&old), Some(resume), now);
    let mut sim = Sim::new(dir.path(), vec![honest(&new), honest(&new)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(107));
    assert_eq!(sim.log.staged, vec![107]);
    assert_eq!(sim.log.notes.len(), 1);
    assert!(
        sim.log.notes[0].contains("window 7 is no longer served"),
        "{}",
        sim.log.notes[0]
    );
    assert!(
        sim.log.notes[0].contains("window 107"),
        "{}",
        sim.log.notes[0]
    );
    assert!(
        sim.log.demoted.is_empty(),
        "not serving a pruned snapshot is no offence"
    );
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(staged, new.entries);
}

#[test]
fn unrequested_and_duplicated_chunks_demote_their_sender() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let mut sim = Sim::new(dir.path(), vec![honest(&f), honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    // Peer 2 pushes a chunk nobody asked of it (already held).
    let out = s.on_message(2, SyncMessage::Chunk(Some(f.chunk(0).encode())), now);
    assert!(out.is_empty(), "after the install nothing is taken");
    let dir = tempfile::tempdir().unwrap();
    let mut s = FastSync::new(config(&f), None, now);
    let mut sim = Sim::new(dir.path(), vec![honest(&f)]);
    sim.kill_after = Some(2);
    sim.start(&mut s, now);
    let held = *sim.log.stored.keys().next().unwrap();
    let q = s
        .on_message(1, SyncMessage::Chunk(Some(f.chunk(held).encode())), now)
        .into_iter()
        .map(|a| (1, a))
        .collect();
    sim.kill_after = None;
    sim.run(&mut s, q, now);
    assert!(
        sim.log.demoted.contains(&(1, "chunk_duplicate")),
        "{:?}",
        sim.log.demoted
    );
    let out = s.on_message(1, SyncMessage::Chunk(Some(vec![0; 10])), now);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Demote {
            reason: "chunk_malformed",
            ..
        }
    )));
}

/// Syncs from the genesis set `genesis` against one honest peer serving
/// `f` with `certs`, `page` certificates per answer (0: as many as fit):
/// what happened and the rejections.
fn one_peer(
    f: &Fixture,
    genesis: &ActiveSet,
    certs: Vec<Vec<u8>>,
    page: usize,
) -> (Log, BTreeMap<&'static str, u64>) {
    let cfg = Config {
        genesis_set: genesis.clone(),
        ..config(f)
    };
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut s = FastSync::new(cfg, None, now);
    let mut p = honest(f);
    p.certificates = certs;
    p.page = page;
    let mut sim = Sim::new(dir.path(), vec![p]);
    sim.start(&mut s, now);
    (sim.log, s.rejected().clone())
}

/// The network's set changed twice before the snapshot window: the
/// genesis set g made s2 (window 2), s2 made the fixture's set (window 4),
/// which cemented the snapshot of window 7. Served one certificate per
/// page, the sync follows both from the genesis, verifies the manifest
/// against the set they lead to and stages that set with them. Without
/// the certificates, with one left out, or with a change cemented by keys
/// that were never members, the manifest is refused and nothing staged.
#[test]
fn a_snapshot_after_changes_of_the_active_set_is_trusted_through_certificates() {
    use crate::snapshot::certificate::tests::certificate;
    let f = fixture(3 * CHUNK_SIZE, 7);
    let (g, gk) = set_of(4);
    let (s2, k2) = set_of(5);
    let c2 = certificate(&s2, 2, &[&gk[0], &gk[1], &gk[2]]);
    let c4 = certificate(&f.set, 4, &[&k2[0], &k2[1], &k2[2], &k2[3]]);
    let run = |certs: Vec<Vec<u8>>| one_peer(&f, &g, certs, 1);
    let (log, rejected) = run(vec![c2.encode(), c4.encode()]);
    assert_eq!(log.installed, Some(7), "{rejected:?}");
    assert_eq!(
        log.certificate_pages, 3,
        "two pages of one, then the empty end"
    );
    let trust = log.trust.unwrap();
    assert_eq!(trust.set, f.set);
    assert_eq!(trust.certificates, vec![c2.clone(), c4.clone()]);
    // No certificates: the Cement is checked against the genesis set.
    let (log, rejected) = run(vec![]);
    assert_eq!(log.installed, None);
    assert!(log.staged.is_empty());
    assert!(
        log.demoted.contains(&(1, "cement_non_member")),
        "{:?}",
        log.demoted
    );
    assert!(rejected.contains_key("cement_non_member"));
    // The first change left out: the second is not signed by the set in
    // force.
    let (log, _) = run(vec![c4.encode()]);
    assert_eq!(log.installed, None);
    assert!(
        log.demoted.contains(&(1, "certificate_broken")),
        "{:?}",
        log.demoted
    );
    // A forged change: cemented by keys that were never members.
    let (_, stranger) = set_of(3);
    let forged = certificate(&s2, 2, &[&stranger[0], &stranger[1], &stranger[2]]);
    let (log, _) = run(vec![forged.encode(), c4.encode()]);
    assert_eq!(log.installed, None);
    assert!(log.staged.is_empty());
    assert!(
        log.demoted.contains(&(1, "certificate_broken")),
        "{:?}",
        log.demoted
    );
}

/// Two peers that offer no snapshot of their own but answer every chunk
/// request first, with bad chunks, before anything has verified: they must
/// not get the honest source's manifest blamed (before the fix: two
/// failures from distinct peers demoted the source as
/// `manifest_unconfirmed` and dropped the snapshot, every time).
#[test]
fn two_lying_peers_cannot_get_an_honest_source_blamed() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let mut liar = corrupting(&f);
    liar.manifest = None;
    // Peers 1 and 2 are asked for chunks before peer 3 (the source) in
    // each round and answer first.
    let mut sim = Sim::new(dir.path(), vec![liar.clone(), liar, honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert!(
        !sim.log.demoted.iter().any(|(p, _)| *p == 3),
        "the honest source demoted: {:?}",
        sim.log.demoted
    );
    for liar in [1, 2] {
        assert!(
            sim.log.demoted.contains(&(liar, "chunk_bad_proof")),
            "{:?}",
            sim.log.demoted
        );
    }
    assert_eq!(
        sim.log.staged.len(),
        1,
        "one snapshot staged, never dropped"
    );
    assert!(sim.log.stored.values().all(|p| *p == 3));
}

/// G = k0..k3 and S = G + k4 (k4 joined at window 3): sets that overlap,
/// so that leaving the change out cannot show as a broken certificate.
fn overlapping() -> (ActiveSet, ActiveSet, Vec<crate::keys::NodeKeys>) {
    let (s, k) = set_of(5);
    let joiner = crate::consensus::active::NodeId::of(k[4].verifying_key());
    let g = ActiveSet::new(
        s.members()
            .iter()
            .filter(|m| m.id != joiner)
            .cloned()
            .collect(),
    )
    .unwrap();
    (g, s, k)
}

/// A change of the set left out: a snapshot of `entries` entries at window
/// 7 of the set S that G became at window 3 ([`overlapping`]), served by a
/// liar (the real manifest, its Cement rebuilt from G's precommits only: G
/// alone is a quorum of G; no certificates) and by an honest server (with
/// the certificate of 3).
struct LeftOut {
    f: Fixture,
    liar: PeerSim,
    good: PeerSim,
    /// The genesis set G.
    cfg: Config,
    /// S, the set after 3.
    set: ActiveSet,
    c3: Certificate,
}

fn left_out(entries: u64) -> LeftOut {
    use crate::snapshot::certificate::tests::certificate;
    use crate::snapshot::format::tests::snapshot_of;
    let (g, set, k) = overlapping();
    let c3 = certificate(&set, 3, &[&k[0], &k[1], &k[2]]);
    let f = snapshot_of(entries, 7, &set, &[&k[0], &k[1], &k[2], &k[4]]);
    let mut forged = f.manifest.clone();
    forged.cement = cement(&f.proposal, &[&k[0], &k[1], &k[2]]);
    let mut liar = honest(&f);
    liar.manifest = Some(forged.encode());
    let mut good = honest(&f);
    good.certificates = vec![c3.encode()];
    let cfg = Config {
        genesis_set: g,
        ..config(&f)
    };
    LeftOut {
        f,
        liar,
        good,
        cfg,
        set,
        c3,
    }
}

/// A hostile server answers discovery with the real newest manifest of
/// window 7 but its Cement rebuilt from G's precommits only (J's dropped:
/// G alone is a quorum of G) and serves no certificates, leaving out the
/// change G -> S of window 3. Every certificate it gave is valid and the
/// Cement verifies against G, so before the fix the snapshot installed
/// with G as the tip's set (honest Cements of 7, signed by J, refused
/// after). Now the state's members (S) are not the set followed (G): the
/// install is refused, the server demoted (`certificate_missing`), and the
/// honest server's snapshot installs with S and the certificate of 3.
#[test]
fn a_certificate_left_out_is_caught_at_install_and_its_server_blamed() {
    let LeftOut {
        liar,
        good,
        cfg,
        set: s,
        c3,
        ..
    } = left_out(3 * CHUNK_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut sync = FastSync::new(cfg, None, now);
    let mut sim = Sim::new(dir.path(), vec![liar, good]);
    sim.start(&mut sync, now);
    assert_eq!(sim.log.refused.len(), 1, "{:?}", sim.log.trust);
    assert!(
        sim.log.refused[0].contains("left out"),
        "{}",
        sim.log.refused[0]
    );
    assert_eq!(sim.log.demoted, vec![(1, "certificate_missing")]);
    assert_eq!(sync.rejected().get("certificate_missing"), Some(&1));
    assert_eq!(
        sim.log.staged,
        vec![7, 7],
        "staged again from the honest one"
    );
    assert_eq!(sim.log.installed, Some(7));
    let trust = sim.log.trust.unwrap();
    assert_eq!(trust.set, s);
    assert_eq!(trust.certificates, vec![c3]);
}

/// The certificate of the snapshot window w itself, where the set changed
/// at w (G cemented w, S holds after it): the sync asks for it, checks the
/// Cement against G, stages it (so the node serves it on) and installs.
/// Left out, the install is refused and the server blamed.
#[test]
fn a_change_of_the_set_at_the_snapshot_window_is_followed_and_kept() {
    use crate::consensus::merkle::range_proof;
    use crate::snapshot::format::tests::snapshot_of;
    let (g, s, k) = overlapping();
    let f = snapshot_of(3 * CHUNK_SIZE, 7, &s, &[&k[0], &k[1], &k[2]]);
    let a = f.entries.iter().position(|e| e.0[0] == b'm').unwrap() - 1;
    let b = (f.entries.iter().rposition(|e| e.0[0] == b'm').unwrap() + 2).min(f.entries.len());
    let c7 = Certificate {
        header: f.proposal.header.clone(),
        cement: f.manifest.cement.clone(),
        entries: f.entries.len() as u64,
        first: a as u64,
        range: f.entries[a..b].to_vec(),
        proof: range_proof(&f.leaves, a as u64, b as u64),
    };
    let run = |certs: Vec<Vec<u8>>| one_peer(&f, &g, certs, 0);
    let (log, rejected) = run(vec![c7.encode()]);
    assert_eq!(log.installed, Some(7), "{rejected:?} {:?}", log.refused);
    assert!(log.demoted.is_empty());
    let trust = log.trust.unwrap();
    assert_eq!(trust.set, g, "the set that cemented 7");
    assert_eq!(trust.certificates.len(), 1);
    assert!(trust.certificates[0] == c7, "the certificate of 7 staged");
    assert_eq!(trust.state_set(7).unwrap(), s);
    // Left out: refused, nothing installed, the server blamed.
    let (log, rejected) = run(vec![]);
    assert_eq!(log.installed, None);
    assert_eq!(log.refused.len(), 1);
    assert_eq!(log.demoted, vec![(1, "certificate_missing")]);
    assert_eq!(rejected.get("certificate_missing"), Some(&1));
}

/// A network whose set changed at windows 1 ..= k, the last change to
/// `f`'s set (each certificate signed by 3 of the 4 members before it):
/// its config (the genesis set) and the certificates, encoded.
fn changes(f: &Fixture, k: u64) -> (Config, Vec<Vec<u8>>) {
    use crate::snapshot::certificate::tests::certificate;
    let (g, gk) = set_of(4);
    let (mut keys, mut certs) = (gk, Vec::new());
    for w in 1..=k {
        let (next, nk) = if w == k {
            (f.set.clone(), Vec::new())
        } else {
            set_of(4)
        };
        certs.push(certificate(&next, w, &[&keys[0], &keys[1], &keys[2]]).encode());
        keys = nk;
    }
    let cfg = Config {
        genesis_set: g,
        ..config(f)
    };
    (cfg, certs)
}

/// Two peers advertise higher windows than the honest snapshot, with
/// Cements that fail (short of quorum; signed by strangers). Each is one
/// candidate: refused, its sender demoted, and the next candidate taken
/// without a new discovery round (before the fix: the best manifest alone
/// was kept, and each refusal started discovery again: 3 rounds).
#[test]
fn higher_fake_manifests_cost_one_candidate_each_not_a_new_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let (_, strangers) = set_of(3);
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let short = higher_at(&f, 9, &[&f.keys[0], &f.keys[1]]);
    let forged = higher_at(&f, 10, &[&strangers[0], &strangers[1], &strangers[2]]);
    let mut sim = Sim::new(dir.path(), vec![short, forged, honest(&f), honest(&f)]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.manifests_asked, 4, "one discovery round");
    assert_eq!(
        sim.log.demoted,
        vec![(2, "cement_non_member"), (1, "cement_short_of_quorum")],
        "window 10 first, then 9"
    );
    assert_eq!(sim.log.staged, vec![7]);
    assert_eq!(sim.log.certificate_pages, 3, "one per candidate");
    let from: BTreeSet<PeerIndex> = sim.log.stored.values().copied().collect();
    assert_eq!(from, BTreeSet::from([3, 4]));
}

/// The set changed 6 times; the manifest's first sender dribbles its
/// (valid) certificates one per page, each 9 s after the request (within
/// the 10 s request timeout). Certify's budget ends its turn at 30 s
/// (`timeout`) and the other peer that sent the same manifest serves the
/// certificates at once: installed by 31 s, one discovery round, and the
/// node never reaches its give-up (before the fix: each page renewed the
/// deadline, and the snapshot waited on the staller for 63 s).
#[test]
fn a_certificate_staller_is_cut_off_and_another_sender_certifies() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let (cfg, certs) = changes(&f, 6);
    let now = Instant::now();
    let mut s = FastSync::new(cfg, None, now);
    let mut staller = honest(&f);
    staller.certificates = certs.clone();
    staller.page = 1;
    staller.certificates_after = Some(Duration::from_secs(9));
    let mut good = honest(&f);
    good.certificates = certs.clone();
    let mut sim = Sim::new(dir.path(), vec![staller, good]);
    sim.start(&mut s, now);
    assert_eq!(sim.log.installed, None, "waiting on the staller");
    let done = sim.advance(&mut s, now, now + Duration::from_secs(120));
    assert!(
        done.is_some_and(|t| t <= now + Duration::from_secs(31)),
        "installed after {:?}",
        done.map(|t| t - now)
    );
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.demoted, vec![(1, "timeout")]);
    assert_eq!(sim.log.manifests_asked, 2, "one discovery round");
    assert_eq!(sim.log.gave_up, None);
    let trust = sim.log.trust.unwrap();
    assert_eq!(trust.set, f.set);
    let got: Vec<Vec<u8>> = trust.certificates.iter().map(|c| c.encode()).collect();
    assert_eq!(got, certs);
}

/// Two stallers advertise higher (fake) windows and dribble the real
/// certificates one page per 9 s; the honest snapshot waits third in the
/// list. At 31 s no snapshot is accepted yet (the old give-up rule, "no
/// target after 30 s", would replay), but candidates remain, so the node
/// does not give up: each staller costs its 30 s budget and the honest
/// snapshot installs at about 61 s. With no candidate at all, the node
/// gives up 30 s after the start.
#[test]
fn the_node_gives_up_only_when_no_candidate_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(N, 7);
    let (cfg, certs) = changes(&f, 6);
    let now = Instant::now();
    let mut s = FastSync::new(cfg.clone(), None, now);
    let staller = |window: u64| {
        let mut p = higher_at(&f, window, &[&f.keys[0], &f.keys[1]]);
        p.certificates = certs.clone();
        p.page = 1;
        p.certificates_after = Some(Duration::from_secs(9));
        p
    };
    let mut good = honest(&f);
    good.certificates = certs.clone();
    let mut sim = Sim::new(dir.path(), vec![staller(9), staller(8), good]);
    sim.start(&mut s, now);
    let at = now + Duration::from_secs(31);
    assert_eq!(sim.advance(&mut s, now, at), None);
    assert_eq!(s.target_window(), None, "no snapshot accepted at 31 s");
    assert!(!s.exhausted(at, GIVE_UP_AFTER), "candidates remain");
    let done = sim.advance(&mut s, at, now + Duration::from_secs(120));
    assert!(
        done.is_some_and(|t| t <= now + Duration::from_secs(62)),
        "installed after {:?}",
        done.map(|t| t - now)
    );
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.gave_up, None);
    assert_eq!(sim.log.demoted, vec![(1, "timeout"), (2, "timeout")]);
    assert_eq!(sim.log.manifests_asked, 3, "one discovery round");
    // Nobody offers a snapshot: given up 30 s after the start, not before.
    let dir = tempfile::tempdir().unwrap();
    let mut s = FastSync::new(cfg, None, now);
    let mut none = honest(&f);
    none.manifest = None;
    let mut sim = Sim::new(dir.path(), vec![none]);
    sim.start(&mut s, now);
    sim.advance(&mut s, now, now + Duration::from_secs(40));
    assert_eq!(sim.log.gave_up, Some(now + GIVE_UP_AFTER));
}

/// A source leaves the change G -> S out (its Cement rebuilt from G's
/// precommits, no certificates) of a 10-chunk snapshot. The member
/// entries sort near the end of the state, so the chunks are asked from
/// the last one down: the state's members are checked once the chunk
/// holding them is in, the snapshot refused after at most one request per
/// slot (4 of 10 chunks), the source demoted, and the honest sender's
/// manifest, next in the list, installs without a new discovery round
/// (before the fix: every chunk was fetched before the refusal, then
/// discovery again).
#[test]
fn a_certificate_left_out_is_caught_once_the_member_chunks_are_in() {
    let LeftOut {
        f,
        liar,
        good,
        cfg,
        c3,
        ..
    } = left_out(N);
    assert_eq!(f.manifest.chunks(), 10);
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut sync = FastSync::new(cfg, None, now);
    let mut sim = Sim::new(dir.path(), vec![liar, good]);
    sim.start(&mut sync, now);
    assert_eq!(sim.log.refused.len(), 1);
    assert!(
        sim.log.refused_after[0] <= 4,
        "refused after {} chunk requests",
        sim.log.refused_after[0]
    );
    assert_eq!(sim.log.demoted, vec![(1, "certificate_missing")]);
    assert_eq!(sim.log.manifests_asked, 2, "one discovery round");
    assert_eq!(sim.log.staged, vec![7, 7]);
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.trust.unwrap().certificates, vec![c3]);
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(staged, f.entries);
}

/// The member check is refused after the event that asked for it moved
/// the machine on: the target's only peer said "not served" to a chunk,
/// so the machine is discovering again. The target is dropped and its
/// source demoted all the same (before the fix: ignored outside Fetch;
/// the same manifest, certified again, was taken as the target still held
/// and not staged again, and its next chunk, put into the cleared staging,
/// stopped the node's start).
#[test]
fn a_member_refusal_after_the_machine_moved_on_still_drops_the_target() {
    let f = fixture(N, 7);
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let mut s = FastSync::new(config(&f), None, now);
    let mut liar = honest(&f);
    liar.silent = true;
    let mut sim = Sim::new(dir.path(), vec![liar]);
    sim.start(&mut s, now);
    assert_eq!(s.target_window(), Some(7));
    let out = s.on_message(1, SyncMessage::Chunk(None), now);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: SyncMessage::GetManifest { .. },
                ..
            }
        )),
        "discovering again: {out:?}"
    );
    let out = s.members_refused(7, "a change of the set left out".into(), now);
    assert_eq!(s.target_window(), None);
    assert!(
        out.iter().any(|a| matches!(
            a,
            Action::Demote {
                peer: 1,
                reason: "certificate_missing",
                ..
            }
        )),
        "{out:?}"
    );
    // A refusal for a window that is not the target changes nothing.
    assert!(s.members_refused(7, "again".into(), now).is_empty());
}

/// A sync killed once the member chunks of a snapshot that leaves a change
/// of the set out were staged, before their check ran, then resumed: the
/// check is made first, from the ends staged with each chunk, and the
/// snapshot refused before anything more is fetched. Fails before: a
/// resume left the check to the end, so every other chunk was fetched
/// first and the refusal came at the install.
#[test]
fn a_resumed_sync_checks_the_members_before_fetching_the_rest() {
    let LeftOut {
        f,
        liar,
        good,
        cfg,
        c3,
        ..
    } = left_out(N);
    let n = f.manifest.chunks();
    // Chunks come from the top down: how many hold every member entry.
    let mut m = Members::default();
    let upto = (0..n)
        .rev()
        .position(|i| m.note(i, f.chunk(i).ends(), n))
        .unwrap()
        + 1;
    assert!(upto < n as usize / 2, "{upto} of {n} chunks");
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    {
        let mut sync = FastSync::new(cfg.clone(), None, now);
        let mut sim = Sim::new(dir.path(), vec![liar.clone()]);
        sim.kill_after = Some(upto);
        assert!(!sim.start(&mut sync, now), "killed");
        assert!(sim.log.refused.is_empty(), "killed before the check");
    }
    let staging = Staging::open(dir.path()).unwrap();
    let resume = Resume {
        manifest: staging.target().unwrap().clone(),
        held: staging.held_chunks().unwrap(),
        proposal: staging.proposal().unwrap().is_some(),
    };
    drop(staging);
    let mut sync = FastSync::new(cfg, Some(resume), now);
    let mut sim = Sim::new(dir.path(), vec![liar, good]);
    sim.start(&mut sync, now);
    assert_eq!(
        sim.log.refused_after[0], 0,
        "refused after {} chunk requests",
        sim.log.refused_after[0]
    );
    // The resume did not know whose snapshot it was: the liar's offer is
    // refused once more (early too), and its sender blamed then.
    assert_eq!(sim.log.refused.len(), 2);
    assert_eq!(sim.log.demoted, vec![(1, "certificate_missing")]);
    assert_eq!(sync.rejected().get("certificate_missing"), Some(&2));
    assert_eq!(sim.log.installed, Some(7));
    assert_eq!(sim.log.trust.unwrap().certificates, vec![c3]);
    let staged: Vec<_> = sim.staging.entries().map(|e| e.unwrap()).collect();
    assert_eq!(staged, f.entries);
}
